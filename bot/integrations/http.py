"""Plain HTTP to the app under migration: the maintenance-mode webhook, reachability probes, shared helpers."""

from __future__ import annotations

import functools
import re
import ssl
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

import httpx

from bot.errors import BotError, DeployError, IntegrationError
from bot.redact import redact, register_secret

USER_AGENT = "migrate-bot/0.1"
# What a request can raise before there is a response: transport failures, timeouts, malformed URLs.
NETWORK_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, httpx.InvalidURL)
MAINTENANCE_TOKEN_HEADER = "X-Maintenance-Token"


class ProbeResult(NamedTuple):
    """One GET against a URL: unpacks as ``ok, status, latency_ms, error``."""

    ok: bool
    status: int | None
    latency_ms: float
    error: str | None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context (certifi's CA bundle, as httpx uses) shared by every client.

    Building it is what makes ``httpx.Client()`` slow (~70 ms); clients here are short-lived, so reuse it.
    """
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def new_client(*, timeout_s: float = 10) -> httpx.Client:
    """An httpx client with the bot's defaults: no redirects followed, no proxies from env, a fixed User-Agent.

    Redirects are not followed because every probe names the status it expects (as `curl` in the runbook does).
    """
    return httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False, verify=_tls_context(),
                        headers={"User-Agent": USER_AGENT})


def expected_text(expect: int | Iterable[int]) -> str:
    """``200`` -> "200"; ``[200, 201]`` -> "200 or 201"; three or more -> "one of 200, 201, 204"."""
    codes = [expect] if isinstance(expect, int) else list(expect)
    if len(codes) == 1:
        return str(codes[0])
    if len(codes) == 2:
        return f"{codes[0]} or {codes[1]}"
    return "one of " + ", ".join(str(code) for code in codes)


def status_matches(status: int, expect: int | Iterable[int]) -> bool:
    """Whether ``status`` is the expected code or one of the expected codes."""
    return status == expect if isinstance(expect, int) else status in list(expect)


def describe_http_error(exc: Exception, *, timeout_s: float | None = None) -> str:
    """One short, redacted line for a network-level failure (no traceback, no secrets)."""
    if isinstance(exc, httpx.TimeoutException):
        kind = {httpx.ConnectTimeout: "connect", httpx.ReadTimeout: "read", httpx.WriteTimeout: "write",
                httpx.PoolTimeout: "pool"}.get(type(exc), "")
        after = f" after {timeout_s:g} s" if timeout_s is not None else ""
        return f"timed out{after}" + (f" ({kind})" if kind else "")
    detail = _first_line(str(exc)) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {detail}"
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return f"bad URL: {detail}"
    return f"{type(exc).__name__}: {detail}"


def body_excerpt(response: httpx.Response, limit: int = 160) -> str:
    """The start of a response body on one line, redacted; HTML is reduced to its text."""
    try:
        text = response.text
    except (httpx.HTTPError, UnicodeDecodeError):
        return ""
    if "<" in text and ">" in text:
        text = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", text)
        text = re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return redact(text)


def send(client: httpx.Client | None, method: str, url: str, *, timeout_s: float, unreachable: str,
         error: type[BotError] = IntegrationError, **kwargs: Any) -> httpx.Response:
    """One request on ``client``, or on a short-lived client of its own; a network failure raises ``error``
    as ``"<unreachable>: <one redacted line>"``. The answer, whatever its status, is the caller's to judge."""
    http = client or new_client(timeout_s=timeout_s)
    try:
        return http.request(method, url, timeout=timeout_s, **kwargs)
    except NETWORK_ERRORS as exc:
        raise error(f"{unreachable}: {describe_http_error(exc, timeout_s=timeout_s)}") from exc
    finally:
        if client is None:
            http.close()


def probe(url: str, expect_status: int | list[int] = 200, timeout_s: float = 10,
          *, client: httpx.Client | None = None) -> ProbeResult:
    """GET ``url`` once and say whether it answered with the expected status; never raises for HTTP trouble."""
    own = client is None
    http = client or new_client(timeout_s=timeout_s)
    started = time.perf_counter()
    try:
        response = http.get(url, timeout=timeout_s)
    except NETWORK_ERRORS as exc:
        return ProbeResult(False, None, _ms_since(started), describe_http_error(exc, timeout_s=timeout_s))
    finally:
        if own:
            http.close()
    latency = _ms_since(started)
    if status_matches(response.status_code, expect_status):
        return ProbeResult(True, response.status_code, latency, None)
    return ProbeResult(False, response.status_code, latency,
                       f"expected {expected_text(expect_status)}, got {response.status_code}")


def set_maintenance_webhook(url: str, *, enabled: bool, token: str | None, timeout_s: float = 10) -> None:
    """POST ``{"enabled": ...}`` to the app's maintenance endpoint with its shared secret.

    Raises DeployError (one line, token removed) on a non-2xx answer or a network failure.
    """
    register_secret(token)
    headers = {MAINTENANCE_TOKEN_HEADER: token} if token else {}
    action = "on" if enabled else "off"
    where = redact(url)
    response = send(None, "POST", url, timeout_s=timeout_s, json={"enabled": enabled}, headers=headers,
                    unreachable=f"Could not switch maintenance mode {action} via {where}", error=DeployError)
    if not response.is_success:
        excerpt = body_excerpt(response, limit=120)
        hint = " (check the webhook token)" if response.status_code in (401, 403) else ""
        raise DeployError(f"Could not switch maintenance mode {action}: {where} answered "
                          f"{response.status_code}{hint}" + (f": {excerpt}" if excerpt else ""))


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""
