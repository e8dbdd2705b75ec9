"""Sentry's web API, read-only: how many errors the app raised against how many requests it served.

``Sentry.error_rate(window_minutes)`` makes up to three GETs (auth: ``Authorization: Bearer <token>``, scopes
``org:read`` and ``project:read``):

1. ``/api/0/projects/{org}/{project}/`` -> ``{"id": "4500…", "slug": …}`` — only when ``project`` is a slug;
   the numeric id is cached. The stats endpoints filter by project id, not slug.
2. ``/api/0/organizations/{org}/stats_v2/?field=sum(quantity)&category=error&groupBy=outcome&project=<id>
   &start=…&end=…&interval=1h`` ->
   ``{"start", "end", "intervals": [...], "groups": [{"by": {"outcome": "accepted"},
   "totals": {"sum(quantity)": 12}, "series": {"sum(quantity)": [...]}}, ...]}``.
   Errors = the sum over the outcomes in ``ERROR_OUTCOMES`` (stored, plus those dropped by rate limits:
   a spike that hits the quota is still a spike). A group without ``totals`` is summed from its ``series``;
   no groups means zero. stats_v2's finest resolution is one hour, so Sentry may widen the window to whole
   hours; the ``start``/``end`` it answers with are taken as the real window.
3. ``/api/0/organizations/{org}/events/?field=count()&dataset=transactions&query=event.type:transaction
   &project=<id>&start=…&end=…`` (the same window as step 2) -> ``{"data": [{"count()": 3400}], "meta": …}``.
   That is the request total — exact only if the app traces every request (``traces_sample_rate=1.0``);
   with sampling, the rate reads high. An empty ``data`` means zero.

Every failure (network, non-2xx, unexpected JSON) raises ``IntegrationError`` with one readable line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bot.errors import IntegrationError
from bot.integrations.http import body_excerpt, send
from bot.redact import register_secret

ERROR_OUTCOMES = frozenset({"accepted", "rate_limited"})
_QUANTITY = "sum(quantity)"


@dataclass(frozen=True)
class ErrorRate:
    """Errors over requests in one window; ``rate`` is a fraction (0.02 = 2 %)."""

    errors: int
    total: int
    rate: float
    start: str | None = None
    end: str | None = None
    by_outcome: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.total == 0:
            return f"{self.errors} errors, no requests counted"
        return f"{self.errors} errors / {self.total} requests ({self.rate:.2%})"


def _number(value: Any) -> int:
    """Sentry returns counts as ints, sometimes floats or strings; None counts as zero."""
    if value is None:
        return 0
    try:
        return int(float(value))
    except (TypeError, ValueError):
        raise IntegrationError(f"Sentry returned a count that is not a number: {str(value)[:40]!r}") from None


def parse_error_counts(document: Any) -> dict[str, int]:
    """Count per outcome from a stats_v2 answer grouped by outcome."""
    if not isinstance(document, dict) or not isinstance(document.get("groups", []), list):
        raise IntegrationError("Sentry stats_v2 answer has no 'groups' list")
    counts: dict[str, int] = {}
    for group in document.get("groups") or []:
        if not isinstance(group, dict):
            continue
        outcome = str((group.get("by") or {}).get("outcome", "unknown")).lower()
        totals = group.get("totals") or {}
        if _QUANTITY in totals:
            value = _number(totals[_QUANTITY])
        else:
            value = sum(_number(v) for v in (group.get("series") or {}).get(_QUANTITY) or [])
        counts[outcome] = counts.get(outcome, 0) + value
    return counts


def parse_event_count(document: Any) -> int:
    """The ``count()`` of the first row of an events answer (0 when there are no rows)."""
    if not isinstance(document, dict) or not isinstance(document.get("data", []), list):
        raise IntegrationError("Sentry events answer has no 'data' list")
    rows = document.get("data") or []
    if not rows:
        return 0
    row = rows[0] if isinstance(rows[0], dict) else {}
    return _number(row.get("count()", row.get("count")))


class Sentry:
    """A read-only client for one Sentry project.

        sentry = Sentry(org="mcc", project="api", token=os.environ["SENTRY_AUTH_TOKEN"])
        print(sentry.error_rate(window_minutes=5))
    """

    def __init__(self, *, org: str, project: str, token: str, base_url: str = "https://sentry.io",
                 timeout_s: float = 10, total_query: str = "event.type:transaction",
                 total_dataset: str = "transactions", client: httpx.Client | None = None) -> None:
        register_secret(token)
        self.base_url = base_url.rstrip("/")
        self.org, self.project = org, project
        self.timeout_s = timeout_s
        self.total_query, self.total_dataset = total_query, total_dataset
        self._token = token
        self._client = client
        self._project_id: str | None = project if project.isdigit() else None

    def project_id(self) -> str:
        """The numeric id of the project (looked up once when the project was given as a slug)."""
        if self._project_id is None:
            document = self._get(f"/api/0/projects/{self.org}/{self.project}/", {}, what="the project lookup")
            pid = document.get("id") if isinstance(document, dict) else None
            if pid is None or not str(pid).isdigit():
                raise IntegrationError(f"Sentry project {self.org}/{self.project} has no numeric id in its answer")
            self._project_id = str(pid)
        return self._project_id

    def error_rate(self, window_minutes: int = 5) -> ErrorRate:
        """Errors and requests of the project over (about) the last ``window_minutes``; see the module notes."""
        if window_minutes <= 0:
            raise ValueError("window_minutes must be positive")
        pid = self.project_id()
        end = datetime.now(UTC).replace(microsecond=0)
        start = end - timedelta(minutes=window_minutes)
        stats = self._get(f"/api/0/organizations/{self.org}/stats_v2/", {
            "field": _QUANTITY, "category": "error", "groupBy": "outcome", "project": pid,
            "start": _iso(start), "end": _iso(end), "interval": "1h",
        }, what="stats_v2")
        by_outcome = parse_error_counts(stats)
        real_start = stats.get("start") if isinstance(stats.get("start"), str) else _iso(start)
        real_end = stats.get("end") if isinstance(stats.get("end"), str) else _iso(end)
        events = self._get(f"/api/0/organizations/{self.org}/events/", {
            "field": "count()", "dataset": self.total_dataset, "query": self.total_query, "project": pid,
            "start": real_start, "end": real_end, "per_page": "1",
        }, what="events")
        total = parse_event_count(events)
        errors = sum(count for outcome, count in by_outcome.items() if outcome in ERROR_OUTCOMES)
        if total > 0:
            rate = errors / total
        else:  # errors with no traced requests: report 100 % so a threshold fires instead of staying silent
            rate = 0.0 if errors == 0 else 1.0
        return ErrorRate(errors=errors, total=total, rate=rate, start=real_start, end=real_end,
                         by_outcome=by_outcome)

    def _get(self, path: str, params: dict[str, str], *, what: str) -> Any:
        url = self.base_url + path
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        response = send(self._client, "GET", url, timeout_s=self.timeout_s, params=params, headers=headers,
                        unreachable=f"Sentry unreachable at {self.base_url}")
        endpoint = what
        status = response.status_code
        if status in (401, 403):
            raise IntegrationError(f"Sentry rejected the auth token ({status}) for {endpoint}; "
                                   "it needs the org:read and project:read scopes")
        if status == 404:
            raise IntegrationError(f"Sentry has no organization {self.org!r} or project {self.project!r} (404)")
        if status == 429:
            retry = response.headers.get("Retry-After")
            raise IntegrationError("Sentry rate-limited the request (429)" + (f"; retry after {retry} s" if retry else ""))
        if not response.is_success:
            excerpt = body_excerpt(response, limit=120)
            raise IntegrationError(f"Sentry answered {status} for {endpoint}" + (f": {excerpt}" if excerpt else ""))
        try:
            return response.json()
        except ValueError:
            raise IntegrationError(f"Sentry answered {endpoint} with something that is not JSON") from None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
