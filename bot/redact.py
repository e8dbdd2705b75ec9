"""Secret redaction: database URLs, Slack tokens, AWS keys and bearer tokens never leave the process."""

from __future__ import annotations

import logging
import re
import threading

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # postgresql://user:password@host -> postgresql://user:***@host. Every pattern here runs in linear time on any
    # input (tests/test_redact.py): a scheme starts only where no scheme character precedes it, so a long run of
    # letters is scanned once rather than once per letter; user and password cannot contain "/", so their scans
    # from different "://" never overlap.
    (re.compile(r"(?<![a-z0-9+.-])(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]+)@"),
     r"\g<scheme>\g<user>:***@"),
    # password=... in libpq keyword strings and query strings
    (re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api_key|apikey)=([^\s&;'\"]+)"), r"\1=***"),
    # Slack tokens: xoxb-, xoxp-, xapp-, xoxa-, xoxs-
    (re.compile(r"\bx(?:ox[abposr]|app)-[A-Za-z0-9-]{6,}"), "xox*-***"),
    # AWS access key ids and secret keys
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), "AKIA***"),
    (re.compile(r"(?i)(aws_secret_access_key\s*[=:]\s*)\S+"), r"\1***"),
    # Authorization headers
    (re.compile(r"(?i)(authorization:\s*(?:bearer|basic)\s+)\S+"), r"\1***"),
    (re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/=-]{8,}"), "Bearer ***"),
]

_known_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a literal secret (a token, a password) so that redact() removes it wherever it appears."""
    if value and len(value) >= 4:
        with _lock:
            _known_secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every known secret and every secret-shaped string replaced by ``***``."""
    if not text:
        return text
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def safe_url(url: str) -> str:
    """``url`` as it may be shown: its password (``scheme://user:password@host``) replaced by ``***``."""
    return redact(re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", url))


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the rendered message of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Keep the type and one redacted line; never let a traceback carry a DSN out.
            exc = record.exc_info[1]
            record.msg = f"{record.msg} [{type(exc).__name__}: {redact(str(exc))}]"
            record.exc_info = None
            record.exc_text = None
        return True
