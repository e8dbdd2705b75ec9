"""The one edge translator: what a person reads about any error, in Slack, on the command line or in the log.

Every place where an error meets a person or would otherwise end a thread uses it: the Slack listeners
(``user_text``), the CLI's main (``operator_text``) and background work nobody waits on (``contained``).
The ladder is always the same: Redis down, then any BotError (its own redacted one-line message), then anything
else, which is a bug: never a traceback, only one redacted line in the log (counted in /metrics, and sent to
Sentry when SENTRY_DSN is set: bot.observability).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from bot import messages
from bot.errors import BotError, StateStoreUnavailable
from bot.observability import metrics, reports
from bot.redact import redact

log = logging.getLogger(__name__)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line with secrets removed: all a log may say about an unexpected error."""
    text = " ".join(str(exc).split())
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:limit]


def user_text(exc: Exception, *, doing: str) -> str:
    """The one line a Slack user reads about ``exc``, raised while ``doing`` what they asked.

    Redis down (or too contended): the state-store text, nothing was changed. A BotError: its own message.
    Anything else: a short apology, and one redacted line in the log for the team.
    """
    if isinstance(exc, StateStoreUnavailable):
        return messages.state_store_unavailable()
    if isinstance(exc, BotError):
        return exc.message
    log.error("%s failed: %s", doing, one_line(exc))
    report(exc)
    return messages.internal_error()


def operator_text(exc: Exception) -> str:
    """The same for the command line, whose reader is the operator (the team itself): a BotError's message,
    Redis down included; anything else named by its type, redacted, on one line."""
    if isinstance(exc, BotError):
        return exc.message
    report(exc)
    return f"unexpected error: {one_line(exc, limit=1000)}"


@contextmanager
def contained(doing: str) -> Iterator[None]:
    """Background work nobody waits on: a failure becomes one log line and goes no further.

    A BotError is a warning with its message; anything else (a bug) an error with its type and one redacted line.
    """
    try:
        yield
    except BotError as exc:
        log.warning("%s failed: %s", doing, exc)
    except Exception as exc:
        log.error("%s failed: %s", doing, one_line(exc))
        report(exc)


def report(exc: BaseException) -> None:
    """A bug was contained: count it (migrate_bot_internal_errors) and send it to Sentry when SENTRY_DSN is set."""
    metrics.internal_error()
    reports.capture(exc)
