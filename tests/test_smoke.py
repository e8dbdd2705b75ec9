"""The smoke-test runner against the real demo app over sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from bot.devtools.demoapp import DemoApp
from bot.integrations.smoke import (
    SmokeProbe,
    SmokeReport,
    SmokeResult,
    extract_path,
    run_smoke_probes,
)
from bot.redact import redact


@pytest.fixture(scope="module")
def running_app() -> Iterator[DemoApp]:
    with DemoApp() as running:
        yield running


@pytest.fixture
def app(running_app: DemoApp) -> DemoApp:
    running_app.reset()
    return running_app


def default_probes(base_url: str) -> list[SmokeProbe]:
    """The seed's chain (the demo app serves it): health -> register a throwaway user -> login (capture token) -> counsel with it.

    The user's email is ``smoke+${run_id}@example.com``, so pass ``variables={"run_id": ...}``.
    """
    base = base_url.rstrip("/")
    credentials = {"email": "smoke+${run_id}@example.com", "password": "Test123!"}
    return [
        SmokeProbe(name="health", url=f"{base}/health"),
        SmokeProbe(name="register", method="POST", url=f"{base}/auth/register", json=credentials,
                   expect_status=[200, 201]),
        SmokeProbe(name="login", method="POST", url=f"{base}/auth/login", json=credentials,
                   capture={"token": "token"}),
        SmokeProbe(name="counsel", method="POST", url=f"{base}/counsel",
                   headers={"Authorization": "Bearer ${token}"}, json={"message": "Test message"},
                   expect_status=[200, 201]),
    ]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestDefaultChain:
    def test_default_chain_passes(self, app: DemoApp) -> None:
        """health -> register -> login -> counsel all pass, each with a recorded latency."""
        report = run_smoke_probes(default_probes(app.base_url), variables={"run_id": "r1"})
        assert report.ok
        assert [r.name for r in report.results] == ["health", "register", "login", "counsel"]
        assert all(r.latency_ms > 0 and r.status in (200, 201) for r in report.results)
        assert report.summary().startswith("4/4 passed, p50 ") and report.summary().endswith(" ms")

    def test_login_token_is_used_by_counsel(self, app: DemoApp) -> None:
        """The token captured from login is the bearer the app saw on /counsel."""
        run_smoke_probes(default_probes(app.base_url), variables={"run_id": "r2"})
        issued = list(app.state.tokens)
        assert len(issued) == 1
        assert app.state.bearers_seen("/counsel") == issued

    def test_run_id_makes_a_unique_user(self, app: DemoApp) -> None:
        """Two runs with different run ids both pass because each registers its own user."""
        assert run_smoke_probes(default_probes(app.base_url), variables={"run_id": "a"}).ok
        assert run_smoke_probes(default_probes(app.base_url), variables={"run_id": "b"}).ok
        assert set(app.state.users) == {"smoke+a@example.com", "smoke+b@example.com"}

    def test_on_result_streams_each_probe(self, app: DemoApp) -> None:
        """on_result is called once per probe, in order, as results arrive."""
        seen: list[SmokeResult] = []
        report = run_smoke_probes(default_probes(app.base_url), variables={"run_id": "r3"}, on_result=seen.append)
        assert seen == report.results

    def test_shared_client_is_left_open(self, app: DemoApp) -> None:
        """A client passed in is used and not closed by the runner."""
        with httpx.Client() as client:
            assert run_smoke_probes(default_probes(app.base_url), variables={"run_id": "r4"}, client=client).ok
            assert not client.is_closed


class TestFailures:
    def test_failing_counsel_stops_the_report(self) -> None:
        """A 500 on /counsel fails the report at counsel with the status in the summary."""
        with DemoApp(fail_path="/counsel") as failing:
            report = run_smoke_probes(default_probes(failing.base_url), variables={"run_id": "f1"})
        assert not report.ok
        assert report.failed is not None and report.failed.name == "counsel"
        assert report.summary().startswith("counsel failed: expected 200 or 201, got 500 (")
        assert report.failed.detail == '{"error":"injected failure"}'

    def test_probes_after_a_failure_are_skipped(self, app: DemoApp) -> None:
        """Probes after the failing one are reported as skipped and never sent."""
        app.state.fail_path = "/auth/login"
        report = run_smoke_probes(default_probes(app.base_url), variables={"run_id": "f2"})
        assert [(r.name, r.ok, r.skipped) for r in report.results] == [
            ("health", True, False), ("register", True, False), ("login", False, False), ("counsel", False, True)]
        assert [r.path for r in app.state.seen].count("/counsel") == 0
        assert report.summary() == f"login failed: expected 200, got 500 ({report.results[2].latency_ms:.0f} ms); 1 skipped"

    def test_closed_port_is_a_failed_result(self) -> None:
        """A refused connection is a failed result with a one-line error, not an exception."""
        report = run_smoke_probes(default_probes(f"http://127.0.0.1:{closed_port()}"), variables={"run_id": "x"})
        first = report.results[0]
        assert not report.ok and first.status is None
        assert first.error is not None and first.error.startswith("cannot connect") and "\n" not in first.error
        assert all(r.skipped for r in report.results[1:])

    def test_timeout_is_a_failed_result(self, app: DemoApp) -> None:
        """A probe slower than its timeout fails with "timed out after …"."""
        app.state.slow_path, app.state.delay_s = "/health", 0.5
        report = run_smoke_probes([SmokeProbe(name="health", url=app.base_url + "/health", timeout_s=0.2)],
                                  variables={})
        assert not report.ok
        assert report.results[0].error is not None and report.results[0].error.startswith("timed out after 0.2 s")

    def test_maintenance_page_fails_health(self, app: DemoApp) -> None:
        """With maintenance still on, health fails with 503 and the summary says so."""
        app.state.maintenance = True
        report = run_smoke_probes(default_probes(app.base_url), variables={"run_id": "m"})
        assert report.summary().startswith("health failed: expected 200, got 503")
        assert report.results[0].detail is not None and "Service Temporarily Unavailable" in report.results[0].detail

    def test_missing_capture_fails_the_probe(self, app: DemoApp) -> None:
        """A capture path the response lacks fails that probe by name."""
        probes = [SmokeProbe(name="health", url=app.base_url + "/health", capture={"token": "auth.token"})]
        report = run_smoke_probes(probes, variables={})
        assert report.results[0].error == "response has no 'auth.token' to capture as token"

    def test_unknown_variable_fails_before_sending(self, app: DemoApp) -> None:
        """An unfilled ${name} fails the probe without sending a request."""
        probes = [SmokeProbe(name="health", url=app.base_url + "/health?x=${nope}")]
        report = run_smoke_probes(probes, variables={})
        assert report.results[0].error == "unknown variable ${nope}"
        assert app.state.seen == []

    def test_empty_chain_is_not_a_pass(self) -> None:
        """No configured probes is reported as not ok."""
        report = run_smoke_probes([], variables={})
        assert not report.ok and report.summary() == "no smoke checks configured"


class TestTemplatingAndRedaction:
    def test_json_strings_and_headers_are_filled(self, app: DemoApp) -> None:
        """${var} in JSON strings (nested) and header values is filled; $$ stays a literal $."""
        probe = SmokeProbe(name="register", method="POST", url=app.base_url + "/auth/register",
                           json={"email": "u+${run_id}@example.com", "password": "Pa$$word"},
                           headers={"X-Run": "${run_id}"}, expect_status=201)
        assert run_smoke_probes([probe], variables={"run_id": "t9"}).ok
        assert "u+t9@example.com" in app.state.users
        login = httpx.post(app.base_url + "/auth/login", json={"email": "u+t9@example.com", "password": "Pa$word"})
        assert login.status_code == 200

    def test_captured_token_is_redacted_afterwards(self, app: DemoApp) -> None:
        """A captured token counts as a secret: redact() removes it from any later text."""
        run_smoke_probes(default_probes(app.base_url), variables={"run_id": "s1"})
        token = next(iter(app.state.tokens))
        assert token not in redact(f"counsel got token {token}")

    def test_secrets_in_url_are_redacted_in_results(self, app: DemoApp) -> None:
        """Credentials in a probe's URL do not appear in its result."""
        url = app.base_url.replace("http://", "http://smoke:hunter2pass@") + "/health?token=abc123secret"
        report = run_smoke_probes([SmokeProbe(name="health", url=url)], variables={})
        assert "hunter2pass" not in report.results[0].url and "abc123secret" not in report.results[0].url

    def test_extract_path_walks_lists(self) -> None:
        """Dotted paths follow dict keys and list indexes."""
        assert extract_path({"data": {"items": [{"id": 7}]}}, "data.items.0.id") == 7
        with pytest.raises(KeyError):
            extract_path({"data": []}, "data.0")

    def test_summary_of_all_passed(self) -> None:
        """The summary of a passing report gives the count and the median latency."""
        results = [SmokeResult(name=n, ok=True, status=200, latency_ms=ms, error=None, method="GET", url="u")
                   for n, ms in (("a", 10), ("b", 30), ("c", 12))]
        assert SmokeReport(results=results).summary() == "3/3 passed, p50 12 ms"


class TestMaintenanceBypass:
    def test_smoke_passes_behind_maintenance_page_with_bypass(self, app: DemoApp) -> None:
        """With maintenance on, the chain passes when the maintenance token rides along as an extra header."""
        app.state.maintenance, app.state.maintenance_token = True, "bypass-$ecret-42"
        try:
            report = run_smoke_probes(default_probes(app.base_url), variables={"run_id": "mb"},
                                      extra_headers={"X-Maintenance-Token": "bypass-$ecret-42"})
            assert report.ok, report.summary()
            assert app.maintenance
            plain = run_smoke_probes(default_probes(app.base_url), variables={"run_id": "mc"})
            assert plain.summary().startswith("health failed: expected 200, got 503")
        finally:
            app.state.maintenance_token = None

    def test_probe_header_wins_over_extra(self, app: DemoApp) -> None:
        """A probe's own Authorization header is kept when extra headers name it too (in any case)."""
        probes = default_probes(app.base_url)
        report = run_smoke_probes(probes, variables={"run_id": "hw"}, extra_headers={"authorization": "Bearer nope"})
        assert report.ok
        assert app.state.bearers_seen("/counsel") == list(app.state.tokens)
