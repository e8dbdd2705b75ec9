"""The Sentry client against the Sentry stand-in, and the PagerDuty stand-in, over real sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from bot.devtools.stubs import PagerDutyStub, SentryStub
from bot.errors import IntegrationError
from bot.integrations.sentry import Sentry, parse_error_counts, parse_event_count


@pytest.fixture
def stub() -> Iterator[SentryStub]:
    with SentryStub(org="mcc", project="api", token="sntrys-abc123") as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def client_for(stub: SentryStub, **overrides: str) -> Sentry:
    args = {"org": stub.org, "project": stub.project, "token": stub.token} | overrides
    return Sentry(base_url=stub.base_url, timeout_s=5, **args)


class TestSentryErrorRate:
    def test_error_rate_from_counts(self, stub: SentryStub) -> None:
        """Errors over requests come back as the rate the stand-in was set to."""
        stub.set_counts(errors=6, total=1200)
        rate = client_for(stub).error_rate(window_minutes=5)
        assert (rate.errors, rate.total) == (6, 1200)
        assert rate.rate == pytest.approx(0.005)
        assert str(rate) == "6 errors / 1200 requests (0.50%)"

    def test_rate_limited_errors_count_and_filtered_do_not(self, stub: SentryStub) -> None:
        """Errors dropped by rate limits count as errors; inbound-filtered ones do not."""
        stub.set_counts(errors=4, total=100, rate_limited=6, filtered=50)
        rate = client_for(stub).error_rate()
        assert rate.errors == 10 and rate.by_outcome["filtered"] == 50

    def test_requests_use_documented_parameters(self, stub: SentryStub) -> None:
        """stats_v2 and events are asked with the documented fields, the numeric project id and one window."""
        client_for(stub).error_rate(window_minutes=5)
        paths = [r.path for r in stub.requests]
        assert paths == ["/api/0/projects/mcc/api/", "/api/0/organizations/mcc/stats_v2/",
                         "/api/0/organizations/mcc/events/"]
        stats, events = stub.requests[1], stub.requests[2]
        assert stats.param("field") == "sum(quantity)" and stats.param("category") == "error"
        assert stats.param("groupBy") == "outcome" and stats.param("project") == stub.project_id
        assert events.param("field") == "count()" and events.param("project") == stub.project_id
        assert events.param("start") <= stats.param("start") and events.param("end") >= stats.param("end")

    def test_numeric_project_skips_lookup(self, stub: SentryStub) -> None:
        """A numeric project id is used directly, without the project lookup."""
        client_for(stub, project=stub.project_id).error_rate()
        assert [r.path for r in stub.requests][0].endswith("/stats_v2/")

    def test_project_id_is_looked_up_once(self, stub: SentryStub) -> None:
        """The slug is resolved to an id on the first call only."""
        sentry = client_for(stub)
        sentry.error_rate()
        sentry.error_rate()
        assert sum(r.path.startswith("/api/0/projects/") for r in stub.requests) == 1

    def test_no_traffic_is_zero(self, stub: SentryStub) -> None:
        """No errors and no requests is a zero rate."""
        rate = client_for(stub).error_rate()
        assert (rate.errors, rate.total, rate.rate) == (0, 0, 0.0)

    def test_errors_without_requests_is_full_rate(self, stub: SentryStub) -> None:
        """Errors with no counted requests report a rate of 1.0 so a threshold still fires."""
        stub.set_counts(errors=3, total=0)
        assert client_for(stub).error_rate().rate == 1.0

    def test_bearer_token_is_sent(self, stub: SentryStub) -> None:
        """Every request carries the token as a Bearer authorization header."""
        client_for(stub).error_rate()
        assert {r.headers["authorization"] for r in stub.requests} == {"Bearer sntrys-abc123"}


class TestSentryErrors:
    def test_wrong_token_is_integration_error(self, stub: SentryStub) -> None:
        """A token Sentry refuses raises IntegrationError without the token text."""
        with pytest.raises(IntegrationError) as info:
            client_for(stub, token="sntrys-wrong-999").error_rate()
        assert "rejected the auth token (401)" in str(info.value)
        assert "sntrys-wrong-999" not in str(info.value)

    def test_unknown_org_is_integration_error(self, stub: SentryStub) -> None:
        """An unknown organization raises IntegrationError naming it."""
        with pytest.raises(IntegrationError, match="no organization 'elsewhere'"):
            client_for(stub, org="elsewhere").error_rate()

    def test_server_error_is_integration_error(self, stub: SentryStub) -> None:
        """A 5xx from stats_v2 raises IntegrationError with the status and endpoint."""
        client = client_for(stub, project=stub.project_id)
        stub.fail_next(503)
        with pytest.raises(IntegrationError, match="Sentry answered 503 for stats_v2"):
            client.error_rate()

    def test_rate_limit_is_integration_error(self, stub: SentryStub) -> None:
        """A 429 raises IntegrationError that says to retry later."""
        stub.fail_next(429)
        with pytest.raises(IntegrationError, match="rate-limited"):
            client_for(stub, project=stub.project_id).error_rate()

    def test_unreachable_is_integration_error(self) -> None:
        """A closed port raises a one-line IntegrationError."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        sentry = Sentry(base_url=f"http://127.0.0.1:{port}", org="mcc", project="1", token="t0ken-x", timeout_s=2)
        with pytest.raises(IntegrationError, match="Sentry unreachable"):
            sentry.error_rate()


class TestSentryParsing:
    def test_group_without_totals_sums_series(self) -> None:
        """A stats group without totals is summed from its series."""
        doc = {"groups": [{"by": {"outcome": "accepted"}, "series": {"sum(quantity)": [1, 2, 3]}}]}
        assert parse_error_counts(doc) == {"accepted": 6}

    def test_empty_answers_are_zero(self) -> None:
        """No groups and no rows both mean zero."""
        assert parse_error_counts({"groups": []}) == {}
        assert parse_event_count({"data": []}) == 0

    def test_malformed_answers_raise(self) -> None:
        """Answers of the wrong shape raise IntegrationError."""
        with pytest.raises(IntegrationError):
            parse_error_counts(["not", "a", "dict"])
        with pytest.raises(IntegrationError):
            parse_event_count({"data": [{"count()": "many"}]})


class TestPagerDutyStub:
    def test_trigger_is_accepted(self, http: httpx.Client) -> None:
        """A valid trigger event answers 202 with a dedup key and is recorded."""
        with PagerDutyStub() as pd:
            response = http.post(pd.base_url + "/v2/enqueue", json={
                "routing_key": "R" * 32, "event_action": "trigger", "dedup_key": "run-42",
                "payload": {"summary": "Migration run 42 failed", "source": "migrate-bot", "severity": "critical"}})
            assert response.status_code == 202
            assert response.json() == {"status": "success", "message": "Event processed", "dedup_key": "run-42"}
            assert pd.events[0]["payload"]["summary"] == "Migration run 42 failed"
            assert pd.incidents == {"run-42": "triggered"}

    def test_resolve_closes_incident(self, http: httpx.Client) -> None:
        """A resolve with the same dedup key marks the incident resolved."""
        with PagerDutyStub() as pd:
            base = {"routing_key": "R" * 32, "dedup_key": "run-7"}
            http.post(pd.base_url + "/v2/enqueue", json=base | {
                "event_action": "trigger", "payload": {"summary": "s", "source": "b", "severity": "error"}})
            http.post(pd.base_url + "/v2/enqueue", json=base | {"event_action": "resolve"})
            assert pd.incidents == {"run-7": "resolved"}

    def test_invalid_event_is_400(self, http: httpx.Client) -> None:
        """An event without payload fields or with an unknown routing key answers 400 and is not recorded."""
        with PagerDutyStub(routing_keys={"good"}) as pd:
            response = http.post(pd.base_url + "/v2/enqueue", json={"routing_key": "bad", "event_action": "trigger"})
            assert response.status_code == 400
            assert response.json()["status"] == "invalid event"
            assert "'routing_key' is invalid" in response.json()["errors"]
            assert pd.events == [] and len(pd.requests) == 1

    def test_injected_failure(self, http: httpx.Client) -> None:
        """fail_next makes the next request answer the given status, then service resumes."""
        with PagerDutyStub() as pd:
            pd.fail_next(429)
            event = {"routing_key": "k", "event_action": "trigger",
                     "payload": {"summary": "s", "source": "b", "severity": "info"}}
            assert http.post(pd.base_url + "/v2/enqueue", json=event).status_code == 429
            assert http.post(pd.base_url + "/v2/enqueue", json=event).status_code == 202
