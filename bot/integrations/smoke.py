"""Smoke tests: a configured chain of HTTP probes against the deployed app, stopping at the first failure.

Templating. The URL, header values and every string inside the JSON body may hold ``${name}``
placeholders (``string.Template`` syntax; ``$$`` is a literal ``$``). Names come from the caller's
``variables`` (the bot passes ``run_id``, and ``smoke_id``, new for every smoke run) and from earlier probes' ``capture``. An unknown name fails that
probe with "unknown variable ${name}" instead of sending a half-filled request. In the environments file,
write ``$${name}`` because the config loader expands ``${VAR}`` from the process environment first.

Captures. ``capture`` maps a variable name to a dotted path into the JSON response: ``"token"``,
``"data.session.token"``, ``"items.0.id"`` (digits index lists). A missing path fails the probe. Captured
values whose name looks secret (token, password, secret, key, cookie, session) are registered with
``bot.redact`` so they never reach Slack or the logs.

Nothing here raises for HTTP trouble: timeouts, refused connections and bad URLs become a failed
``SmokeResult`` with a one-line ``error``; the probes after a failure are reported as skipped.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable, Mapping
from string import Template
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from bot.config import SmokeProbe
from bot.integrations.http import (
    NETWORK_ERRORS,
    body_excerpt,
    describe_http_error,
    expected_text,
    new_client,
    status_matches,
)
from bot.redact import redact, register_secret

_SECRET_NAME = re.compile(r"(?i)token|passw|secret|key|cookie|session|auth")
# Header values are hidden wherever a result shows them (errors, response excerpts, the URL), except these.
_PLAIN_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "content-type", "user-agent"})


class SmokeResult(BaseModel):
    """What happened to one probe; ``url`` has secrets redacted, ``error`` is one line or None."""

    model_config = ConfigDict(frozen=True)

    name: str
    ok: bool
    status: int | None
    latency_ms: float
    error: str | None
    method: str
    url: str
    skipped: bool = False
    detail: str | None = None  # the start of the response body when the status was wrong


class SmokeReport(BaseModel):
    """All results of one smoke run, in order."""

    model_config = ConfigDict(frozen=True)

    results: list[SmokeResult]

    @property
    def ok(self) -> bool:
        """True when every probe ran and passed (an empty chain is not a pass)."""
        return bool(self.results) and all(r.ok for r in self.results)

    @property
    def failed(self) -> SmokeResult | None:
        """The probe that failed, if one did."""
        return next((r for r in self.results if not r.ok and not r.skipped), None)

    def summary(self) -> str:
        """"4/4 passed, p50 12 ms" or "login failed: expected 200, got 401 (23 ms)"."""
        if not self.results:
            return "no smoke checks configured"
        bad = self.failed
        if bad is not None:
            skipped = sum(1 for r in self.results if r.skipped)
            tail = f"; {skipped} skipped" if skipped else ""
            return f"{bad.name} failed: {bad.error} ({bad.latency_ms:.0f} ms){tail}"
        ran = [r.latency_ms for r in self.results]
        return f"{len(ran)}/{len(self.results)} passed, p50 {statistics.median(ran):.0f} ms"


class _UnknownVariable(Exception):
    """A ``${name}`` placeholder had no value."""


def _fill(text: str, values: Mapping[str, str]) -> str:
    try:
        return Template(text).substitute(values)
    except KeyError as exc:
        raise _UnknownVariable(f"unknown variable ${{{exc.args[0]}}}") from None
    except ValueError as exc:  # a lone "$" followed by something that is not a name
        raise _UnknownVariable(f"bad placeholder in {text!r}: {exc}; write $$ for a literal $") from None


def _fill_json(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _fill(value, values)
    if isinstance(value, list):
        return [_fill_json(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _fill_json(item, values) for key, item in value.items()}
    return value


def extract_path(document: Any, path: str) -> Any:
    """Follow a dotted path (``"data.items.0.id"``) into parsed JSON; raise KeyError if any step is missing."""
    current = document
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit() and -len(current) <= int(part) < len(current):
            current = current[int(part)]
        else:
            raise KeyError(path)
    return current


def _result(probe: SmokeProbe, url: str, *, ok: bool, status: int | None = None, latency_ms: float = 0.0,
            error: str | None = None, skipped: bool = False, detail: str | None = None,
            hidden: tuple[str, ...] = ()) -> SmokeResult:
    def clean(text: str) -> str:
        for value in hidden:
            text = text.replace(value, "***")
        return redact(text)

    return SmokeResult(name=probe.name, ok=ok, status=status, latency_ms=latency_ms,
                       error=clean(error) if error else None, method=probe.method.upper(), url=clean(url),
                       skipped=skipped, detail=clean(detail) if detail else None)


def _header_secrets(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The header values a result must not show (longest first); secret-named ones are hidden in logs too."""
    hidden = []
    for name, value in headers.items():
        if name.lower() in _PLAIN_HEADERS or len(value) < 4:
            continue
        hidden.append(value)
        if _SECRET_NAME.search(name):
            register_secret(value)
            # "Bearer <token>": the token alone can show up too (an error page quoting it).
            register_secret(value.split(None, 1)[1] if " " in value.strip() else value)
    return tuple(sorted(set(hidden), key=len, reverse=True))


def _run_one(probe: SmokeProbe, values: dict[str, str], http: httpx.Client,
             extra_headers: Mapping[str, str]) -> SmokeResult:
    try:
        url = _fill(probe.url, values)
        own = {key: _fill(value, values) for key, value in probe.headers.items()}
        # Extra headers are sent verbatim (never templated); a probe's own header of the same name wins.
        headers = {key: value for key, value in extra_headers.items()
                   if key.lower() not in {name.lower() for name in own}} | own
        body = _fill_json(probe.json_body, values) if probe.json_body is not None else None
    except _UnknownVariable as exc:
        return _result(probe, probe.url, ok=False, error=str(exc), hidden=_header_secrets(extra_headers))
    hidden = _header_secrets(headers)
    started = time.perf_counter()
    try:
        response = http.request(probe.method.upper(), url, headers=headers,
                                json=body if probe.json_body is not None else None, timeout=probe.timeout_s)
        response.read()
    except NETWORK_ERRORS as exc:
        return _result(probe, url, ok=False, latency_ms=(time.perf_counter() - started) * 1000,
                       error=describe_http_error(exc, timeout_s=probe.timeout_s), hidden=hidden)
    latency = (time.perf_counter() - started) * 1000
    status = response.status_code
    if not status_matches(status, probe.expect_status):
        return _result(probe, url, ok=False, status=status, latency_ms=latency,
                       error=f"expected {expected_text(probe.expect_status)}, got {status}",
                       detail=body_excerpt(response) or None, hidden=hidden)
    if probe.capture:
        try:
            document = response.json()
        except ValueError:
            return _result(probe, url, ok=False, status=status, latency_ms=latency,
                           error=f"response is not JSON, cannot capture {', '.join(probe.capture)}",
                           detail=body_excerpt(response) or None, hidden=hidden)
        for name, path in probe.capture.items():
            try:
                value = extract_path(document, path)
            except KeyError:
                return _result(probe, url, ok=False, status=status, latency_ms=latency,
                               error=f"response has no {path!r} to capture as {name}", hidden=hidden)
            text = value if isinstance(value, str) else _json_text(value)
            if _SECRET_NAME.search(name):
                register_secret(text)
            values[name] = text
    return _result(probe, url, ok=True, status=status, latency_ms=latency, hidden=hidden)


def _json_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list | bool) or value is None else str(value)


def run_smoke_probes(probes: list[SmokeProbe], *, variables: Mapping[str, str],
                     client: httpx.Client | None = None,
                     on_result: Callable[[SmokeResult], None] | None = None,
                     extra_headers: Mapping[str, str] | None = None) -> SmokeReport:
    """Run ``probes`` in order, feeding captures forward; stop at the first failure and skip the rest.

    ``on_result`` is called once per probe (skipped ones included) as soon as its result is known.
    A given ``client`` is used as is and left open; otherwise one is made (no redirects, no env proxies).
    ``extra_headers`` go on every request (a probe's own header of the same name wins), e.g. the
    maintenance bypass ``{"X-Maintenance-Token": token}`` while the maintenance page is still on; their
    values are treated as secrets.
    """
    values = {key: str(value) for key, value in variables.items()}
    for value in (extra_headers or {}).values():
        register_secret(value)
    extras = dict(extra_headers or {})
    results: list[SmokeResult] = []
    own = client is None
    http = client or new_client()
    failed = False
    try:
        for probe in probes:
            if failed:
                result = _result(probe, probe.url, ok=False, skipped=True,
                                 error="skipped: an earlier check failed")
            else:
                result = _run_one(probe, values, http, extras)
                failed = not result.ok
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        if own:
            http.close()
    return SmokeReport(results=results)
