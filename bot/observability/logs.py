"""Log set-up: human text by default, JSON lines with the run, environment, step and user on request (LOG_FORMAT).

The engine and the handlers say what a thread is working on with ``log_context``; every line logged inside it
carries those fields. Background work handed to a pool keeps them when it is wrapped with ``carry_context``.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TypeVar

from bot.redact import RedactingFilter, redact

FIELDS = ("run_id", "env", "step", "user")
"""What ``log_context`` may set: the fields of a JSON line beyond ts, level, logger and message."""
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_NONE: Mapping[str, str] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("migrate_bot_log_context", default=_NONE)

T = TypeVar("T")


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Within the block, log lines carry these fields (added to any an outer block set); empty values are ignored."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log fields: {', '.join(sorted(unknown))}")
    merged = MappingProxyType({**_context.get(), **{k: str(v) for k, v in fields.items() if v}})
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, str]:
    """The fields ``log_context`` set for this thread (or task) just now."""
    return _context.get()


def carry_context(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` to run on another thread with the log fields of the thread that hands it over (a fresh copy each
    time, so nothing set there leaks into the pool thread's next task)."""
    captured = contextvars.copy_context()

    def run() -> T:
        return captured.copy().run(fn)

    return run


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, and run_id/env/step/user where known; redacted whole."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[1] is not None:  # only when no RedactingFilter ran before us
            exc = record.exc_info[1]
            line["error"] = f"{type(exc).__name__}: {exc}"
        line.update(_context.get())
        fields = {key: redact(value) for key, value in line.items()}
        text = redact(json.dumps(fields, ensure_ascii=False))
        try:
            json.loads(text)
        except ValueError:
            # A secret-shaped pattern ran across a field's closing quote (``aws_secret_access_key=…`` takes all
            # that follows): the fields, each redacted already, make the line.
            return json.dumps(fields, ensure_ascii=False)
        return text


def configure(*, verbose: bool, log_format: str) -> None:
    """The root logger for the CLI and the server: ``log_format`` is "text" or "json" (checked by the caller).

    Like ``logging.basicConfig``, whose place it takes: a root logger that already has handlers keeps them (each
    gets the redaction filter).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for each in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in each.filters):
            each.addFilter(RedactingFilter())
