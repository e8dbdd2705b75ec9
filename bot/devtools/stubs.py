"""Local stand-ins for Sentry's web API and PagerDuty's Events API v2, for tests and the terminal demo.

Both are small threaded HTTP servers on 127.0.0.1 (port 0 picks a free port) that record every request.

SentryStub serves exactly what ``bot.integrations.sentry`` reads:
    GET /api/0/projects/{org}/{project}/                 {"id", "slug", "name", "organization"}
    GET /api/0/organizations/{org}/stats_v2/             groups by outcome (needs field=sum(quantity), groupBy=outcome)
    GET /api/0/organizations/{org}/events/               {"data": [{"count()": total}], "meta": ...} (needs field=count())
and answers 401 unless ``Authorization: Bearer <token>`` matches.

SentryIngestStub takes what sentry-sdk sends for a DSN ``http://<key>@127.0.0.1:<port>/<project id>``:
``POST /api/<project id>/envelope/`` (gzip or plain), answered 200 ``{"id": ...}``; ``events()`` reads the events
back out of the envelopes (the bot's own error reports, SENTRY_DSN).

PagerDutyStub serves ``POST /v2/enqueue`` like the Events API v2: 202 ``{"status": "success", "message":
"Event processed", "dedup_key": ...}``, or 400 ``{"status": "invalid event", ...}`` for a malformed event.

GitHubStub serves the three listings ``bot.integrations.github`` reads (commits of a path, the pull requests of a
commit, the reviews of a pull request), paginated with ``Link: <…>; rel="next"`` and GitHub's rate-limit headers;
401 without ``Authorization: Bearer <token>``, 403 for a repository the token may not read, 404 for an unknown one.

``python -m bot.devtools.stubs`` runs Sentry's and PagerDuty's until Ctrl-C and prints their URLs.
"""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, quote, urlsplit

JsonAnswer = tuple[int, Any] | tuple[int, Any, dict[str, str]]
"""(status, JSON body), or (status, JSON body, extra response headers)."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request a stand-in received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any  # parsed JSON, the raw text if it was not JSON, or None

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else None


class StubServer:
    """A threaded HTTP server on 127.0.0.1 that hands each request to ``answer`` and records it."""

    name = "stub"

    def __init__(self, *, port: int = 0) -> None:
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self.requests: list[RecordedRequest] = []
        self.port = 0

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` once started."""
        if not self.port:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` (e.g. 429 or 503) instead of the real answer."""
        with self._lock:
            self._failures.extend([status] * times)

    def answer(self, request: RecordedRequest) -> JsonAnswer:
        """Return (status, JSON body) for one request; subclasses implement the API."""
        raise NotImplementedError

    def start(self) -> Self:
        """Start serving in a daemon thread; returns self."""
        if self._server is not None:
            return self
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait for an ACK

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                    data = gzip.decompress(data)
                raw = data.decode("utf-8", "replace")
                try:
                    body: Any = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = raw
                request = RecordedRequest(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                                          {k.lower(): v for k, v in self.headers.items()}, body)
                with stub._lock:
                    stub.requests.append(request)
                    failure = stub._failures.pop(0) if stub._failures else None
                extra: dict[str, str] = {}
                if failure is not None:
                    status, answer = failure, {"detail": f"injected failure {failure}"}
                else:
                    try:
                        result = stub.answer(request)
                        status, answer = result[0], result[1]
                        extra = result[2] if len(result) > 2 else {}  # the 3-tuple form
                    except Exception as exc:  # noqa: BLE001 - a stand-in reports its own bugs as a 500
                        status, answer = 500, {"detail": f"stub error: {type(exc).__name__}: {exc}"}
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if status == 429:
                    self.send_header("Retry-After", "1")
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self._requested_port), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=f"{self.name}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server, self._thread = None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SentryStub(StubServer):
    """Sentry's org stats and events endpoints for one organization and project, with settable counts."""

    name = "sentry-stub"

    def __init__(self, *, org: str = "mcc", project: str = "api", project_id: str = "4500000000000001",
                 token: str = "sntrys-test-token", port: int = 0) -> None:
        super().__init__(port=port)
        self.org, self.project, self.project_id, self.token = org, project, project_id, token
        self.errors, self.total, self.filtered, self.rate_limited = 0, 0, 0, 0

    def set_counts(self, errors: int, total: int, *, filtered: int = 0, rate_limited: int = 0) -> None:
        """What the next answers report: accepted errors, requests (transactions), and dropped errors."""
        with self._lock:
            self.errors, self.total, self.filtered, self.rate_limited = errors, total, filtered, rate_limited

    def answer(self, request: RecordedRequest) -> JsonAnswer:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"detail": "Invalid token"}
        if request.method != "GET":
            return 405, {"detail": f'Method "{request.method}" not allowed.'}
        if request.path == f"/api/0/projects/{self.org}/{self.project}/":
            return 200, {"id": self.project_id, "slug": self.project, "name": self.project,
                         "organization": {"slug": self.org}}
        if request.path == f"/api/0/organizations/{self.org}/stats_v2/":
            return self._stats(request)
        if request.path == f"/api/0/organizations/{self.org}/events/":
            return self._events(request)
        return 404, {"detail": "The requested resource does not exist"}

    def _project_ok(self, request: RecordedRequest) -> bool:
        wanted = request.query.get("project", [])
        return not wanted or self.project_id in wanted or "-1" in wanted

    def _window(self, request: RecordedRequest) -> tuple[str, str]:
        """Like Sentry: the requested range widened to whole hours (stats_v2's resolution)."""
        def parse(text: str | None, fallback: datetime) -> datetime:
            if not text:
                return fallback
            return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)

        now = datetime.now(UTC)
        end = parse(request.param("end"), now)
        start = parse(request.param("start"), end - timedelta(hours=1))
        start = start.replace(minute=0, second=0, microsecond=0)
        if end.minute or end.second or end.microsecond:
            end = end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _stats(self, request: RecordedRequest) -> JsonAnswer:
        if request.param("field") not in ("sum(quantity)", "sum(times_seen)"):
            return 400, {"detail": "Invalid field: " + str(request.param("field"))}
        if "outcome" not in request.query.get("groupBy", []):
            return 400, {"detail": "groupBy=outcome is required by this stand-in"}
        if request.param("category") not in (None, "error"):
            return 400, {"detail": "this stand-in only counts category=error"}
        if not self._project_ok(request):
            return 403, {"detail": "You do not have permission to perform this action."}
        start, end = self._window(request)
        field = str(request.param("field"))
        with self._lock:
            outcomes = {"accepted": self.errors, "filtered": self.filtered, "rate_limited": self.rate_limited}
        groups = [{"by": {"outcome": outcome}, "totals": {field: count}, "series": {field: [count]}}
                  for outcome, count in outcomes.items() if count]
        return 200, {"start": start, "end": end, "intervals": [start], "groups": groups}

    def _events(self, request: RecordedRequest) -> JsonAnswer:
        if "count()" not in request.query.get("field", []):
            return 400, {"detail": "this stand-in only answers field=count()"}
        if not self._project_ok(request):
            return 403, {"detail": "You do not have permission to perform this action."}
        with self._lock:
            total = self.total
        return 200, {"data": [{"count()": total}],
                     "meta": {"fields": {"count()": "integer"}, "units": {"count()": None},
                              "dataset": request.param("dataset") or "discover"}}


_PD_ACTIONS = ("trigger", "acknowledge", "resolve")
_PD_SEVERITIES = ("critical", "error", "warning", "info")


class SentryIngestStub(StubServer):
    """Sentry's ingest endpoint for one project: records the envelopes sentry-sdk sends (bodies as raw text)."""

    name = "sentry-ingest-stub"

    def __init__(self, *, key: str = "0123456789abcdef0123456789abcdef", project_id: str = "42",
                 port: int = 0) -> None:
        super().__init__(port=port)
        self.key, self.project_id = key, project_id

    @property
    def dsn(self) -> str:
        """The DSN that points sentry-sdk here."""
        return f"http://{self.key}@127.0.0.1:{self.port}/{self.project_id}"

    def answer(self, request: RecordedRequest) -> JsonAnswer:
        if request.method != "POST" or request.path != f"/api/{self.project_id}/envelope/":
            return 404, {"detail": "not an envelope endpoint of this project"}
        return 200, {"id": uuid.uuid4().hex}

    def envelopes(self) -> list[str]:
        """Every envelope received, as the text it was sent as (newline-separated JSON)."""
        with self._lock:
            return [r.body if isinstance(r.body, str) else json.dumps(r.body) for r in self.requests
                    if r.method == "POST" and r.path.endswith("/envelope/")]

    def events(self) -> list[dict[str, Any]]:
        """The error events in the envelopes (items of type "event")."""
        found: list[dict[str, Any]] = []
        for envelope in self.envelopes():
            lines = envelope.split("\n")
            i = 1  # line 0 is the envelope header
            while i + 1 < len(lines):
                header = json.loads(lines[i]) if lines[i].strip() else {}
                if header.get("type") == "event":
                    found.append(json.loads(lines[i + 1]))
                i += 2
        return found


class PagerDutyStub(StubServer):
    """PagerDuty's Events API v2 enqueue endpoint; keeps every event and the state of each dedup key."""

    name = "pagerduty-stub"

    def __init__(self, *, routing_keys: set[str] | None = None, port: int = 0) -> None:
        super().__init__(port=port)
        self.routing_keys = routing_keys
        self.events: list[dict[str, Any]] = []
        self.incidents: dict[str, str] = {}  # dedup_key -> "triggered" | "acknowledged" | "resolved"

    def answer(self, request: RecordedRequest) -> JsonAnswer:
        if request.path != "/v2/enqueue" or request.method != "POST":
            return 404, {"status": "not found", "message": "Not Found"}
        event = request.body
        errors = self._problems(event)
        if errors:
            return 400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        assert isinstance(event, dict)
        dedup_key = str(event.get("dedup_key") or uuid.uuid4().hex)
        state = {"trigger": "triggered", "acknowledge": "acknowledged", "resolve": "resolved"}[event["event_action"]]
        with self._lock:
            self.events.append(event)
            if state == "triggered" or dedup_key in self.incidents:
                self.incidents[dedup_key] = state
        return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}

    def _problems(self, event: Any) -> list[str]:
        if not isinstance(event, dict):
            return ["Event must be a JSON object"]
        errors: list[str] = []
        key = event.get("routing_key")
        if not isinstance(key, str) or not key:
            errors.append("'routing_key' is missing or blank")
        elif self.routing_keys is not None and key not in self.routing_keys:
            errors.append("'routing_key' is invalid")
        action = event.get("event_action")
        if action not in _PD_ACTIONS:
            errors.append("'event_action' must be one of trigger, acknowledge, resolve")
        elif action == "trigger":
            payload = event.get("payload")
            if not isinstance(payload, dict):
                errors.append("'payload' is missing")
            else:
                for name in ("summary", "source", "severity"):
                    if not payload.get(name):
                        errors.append(f"'payload.{name}' is missing or blank")
                if payload.get("severity") and payload["severity"] not in _PD_SEVERITIES:
                    errors.append("'payload.severity' must be one of critical, error, warning, info")
                if isinstance(payload.get("summary"), str) and len(payload["summary"]) > 1024:
                    errors.append("'payload.summary' is longer than 1024 characters")
        elif not event.get("dedup_key"):
            errors.append(f"'dedup_key' is required to {action}")
        return errors


def main() -> int:
    """Run both stand-ins until Ctrl-C."""
    with SentryStub() as sentry, PagerDutyStub() as pagerduty:
        print(f"Sentry stand-in    {sentry.base_url}  (org {sentry.org}, project {sentry.project}, "
              f"token {sentry.token})", flush=True)
        print(f"PagerDuty stand-in {pagerduty.base_url}/v2/enqueue", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


@dataclass
class _Pull:
    number: int
    author: str
    commits: list[str]
    merged: bool
    reviews: list[dict[str, Any]]


class GitHubStub(StubServer):
    """GitHub's REST API for a few repositories: commits that touched a path, their pull requests, the reviews."""

    name = "github-stub"

    def __init__(self, *, token: str = "ghp_test_token", page_size: int = 2, port: int = 0) -> None:
        super().__init__(port=port)
        self.token = token
        self.page_size = page_size
        """At most this many items a page, whatever per_page asks: small, so pagination is exercised."""
        self.forbidden: set[str] = set()
        """Repositories the token may not read (403)."""
        self.rate_limited = False
        self._commits: dict[str, list[tuple[str, list[str]]]] = {}  # repo -> (sha, paths), oldest first
        self._pulls: dict[str, list[_Pull]] = {}

    def commit(self, repo: str, sha: str, paths: list[str]) -> None:
        """A commit on the default branch of ``repo`` that changed ``paths``."""
        with self._lock:
            self._commits.setdefault(repo, []).append((sha, list(paths)))
            self._pulls.setdefault(repo, [])

    def pull(self, repo: str, number: int, *, author: str, commits: list[str], merged: bool = True) -> None:
        with self._lock:
            self._pulls.setdefault(repo, []).append(_Pull(number, author, list(commits), merged, []))

    def review(self, repo: str, number: int, *, by: str, state: str = "APPROVED") -> None:
        with self._lock:
            pull = next(p for p in self._pulls[repo] if p.number == number)
            at = (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=len(pull.reviews))).strftime("%Y-%m-%dT%H:%M:%SZ")
            pull.reviews.append({"id": 1000 + len(pull.reviews), "user": {"login": by}, "state": state,
                                 "submitted_at": at})

    def answer(self, request: RecordedRequest) -> JsonAnswer:
        limits = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0" if self.rate_limited else "4999",
                  "X-RateLimit-Reset": str(int(datetime.now(UTC).timestamp()) + 3600)}
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}, limits
        if self.rate_limited:
            return 403, {"message": "API rate limit exceeded for user ID 1."}, limits
        parts = request.path.strip("/").split("/")
        if len(parts) < 4 or parts[0] != "repos":
            return 404, {"message": "Not Found"}, limits
        repo = f"{parts[1]}/{parts[2]}"
        with self._lock:
            if repo in self.forbidden:
                return 403, {"message": "Resource not accessible by personal access token"}, limits
            if repo not in self._pulls:
                return 404, {"message": "Not Found"}, limits
            commits, pulls = list(self._commits.get(repo, [])), list(self._pulls[repo])
        rest = parts[3:]
        if rest == ["commits"]:
            path = request.param("path") or ""
            touched = [{"sha": sha, "commit": {"message": f"change {sha[:7]}"}}
                       for sha, paths in reversed(commits) if not path or path in paths]
            return self._page(request, touched, limits)
        if len(rest) == 3 and rest[0] == "commits" and rest[2] == "pulls":
            found = [self._pull_json(repo, p) for p in pulls if rest[1] in p.commits]
            return self._page(request, found, limits)
        if len(rest) == 3 and rest[0] == "pulls" and rest[2] == "reviews" and rest[1].isdigit():
            pull = next((p for p in pulls if p.number == int(rest[1])), None)
            if pull is None:
                return 404, {"message": "Not Found"}, limits
            return self._page(request, list(pull.reviews), limits)
        return 404, {"message": "Not Found"}, limits

    @staticmethod
    def _pull_json(repo: str, pull: _Pull) -> dict[str, Any]:
        merged_at = "2024-01-02T00:00:00Z" if pull.merged else None
        return {"number": pull.number, "state": "closed" if pull.merged else "open", "user": {"login": pull.author},
                "merged_at": merged_at, "html_url": f"https://github.com/{repo}/pull/{pull.number}"}

    def _page(self, request: RecordedRequest, items: list[Any], headers: dict[str, str]) -> JsonAnswer:
        """One page of ``items`` (at most ``page_size``), with a ``Link: rel="next"`` header when more follow."""
        size = min(int(request.param("per_page") or 30), self.page_size)
        page = int(request.param("page") or 1)
        if page * size < len(items):
            query = {k: v[0] for k, v in request.query.items()} | {"page": str(page + 1)}
            link = f"{self.base_url}{request.path}?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
            headers = {**headers, "Link": f'<{link}>; rel="next"'}
        return 200, items[(page - 1) * size: page * size], headers
