"""The observability settings (LOG_FORMAT, SENTRY_DSN, METRICS_PORT): checked and applied once, as the CLI starts."""

from __future__ import annotations

from collections.abc import Mapping

from bot.errors import ConfigError
from bot.observability import logs, metrics, reports


def apply(environ: Mapping[str, str], *, verbose: bool) -> None:
    """Set logging up, start Sentry when SENTRY_DSN is set, and decide where /metrics is served.

    A bad value is a ConfigError naming the setting (never its value: a DSN carries a key); logging is set up
    as text first, so the error itself is logged like any other.
    """
    log_format = environ.get("LOG_FORMAT", "").strip().lower() or "text"
    logs.configure(verbose=verbose, log_format=log_format if log_format in logs.FORMATS else "text")
    if log_format not in logs.FORMATS:
        raise ConfigError(f"LOG_FORMAT must be one of {', '.join(logs.FORMATS)} (got {log_format[:20]!r})")
    metrics.place(_metrics_port(environ.get("METRICS_PORT", "")))
    dsn = environ.get("SENTRY_DSN", "").strip()
    if dsn:
        try:
            reports.init(dsn, environment=environ.get("SENTRY_ENVIRONMENT") or None)
        except Exception as exc:  # sentry_sdk's BadDsn and friends: its message would quote the DSN
            raise ConfigError("SENTRY_DSN is not a Sentry DSN (expected https://<key>@<host>/<project id>): "
                              f"{type(exc).__name__}") from None


def _metrics_port(text: str) -> int | str:
    """"" (the bot's own HTTP port), "off", or a port number for a listener of its own."""
    value = text.strip().lower()
    if value in ("", "off"):
        return value
    if value.isdigit() and 0 < int(value) < 65536:
        return int(value)
    raise ConfigError(f"METRICS_PORT must be a port number, or 'off' (got {text[:20]!r})")
