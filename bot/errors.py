"""The bot's error tree: every failure a user or operator can see is a BotError subclass.

    BotError
    ├── ConfigError          the environments file or the process environment is wrong
    ├── StateStoreUnavailable Redis cannot be reached; nothing was changed
    ├── Refusal              a rule said no (authorization, two-person rule, wrong state)
    │   ├── NotAllowed
    │   ├── SelfApproval
    │   ├── AlreadyDone
    │   ├── StaleMessage
    │   └── RunActive
    ├── RunNotFound
    └── IntegrationError     an outside system (AWS, Postgres, Prisma, HTTP) failed
        ├── BackupError
        ├── MigrationError
        └── DeployError

Edge modules translate library errors (botocore, psycopg, httpx, redis) into these with
``raise ... from``. At the other edge, where an error meets a person, bot.edge turns any exception into the
line that person reads: a BotError's text is always one readable line with secrets removed.
"""

from __future__ import annotations

from bot.redact import redact


class BotError(Exception):
    """Something went wrong that a human should read about in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(BotError):
    """The environments file or the environment variables are invalid."""


class StateStoreUnavailable(BotError):
    """Redis could not be reached, so nothing was read or changed."""


class Refusal(BotError):
    """A rule refused the action; the run is unchanged."""


class NotAllowed(Refusal):
    """The user is not on the allow-list for this action in this environment."""


class SelfApproval(Refusal):
    """The requester tried to approve their own run."""


class AlreadyDone(Refusal):
    """The action was already taken (a doubled click or a retry)."""


class StaleMessage(Refusal):
    """The click came from an out-of-date version of the status message."""


class RunActive(Refusal):
    """Another run is already active in this environment."""


class WrongState(Refusal):
    """The run is not in a state where this action makes sense."""


class RunNotFound(BotError):
    """No run with that id exists."""


class IntegrationError(BotError):
    """An outside system (AWS, PostgreSQL, Prisma, an HTTP endpoint) failed."""


class BackupError(IntegrationError):
    """Taking, storing or verifying a backup failed."""


class MigrationError(IntegrationError):
    """Listing, applying or resolving migrations failed."""


class DeployError(IntegrationError):
    """An ECS deploy or maintenance switch failed or did not stabilise."""
