"""The PagerDuty Events API v2 client against the PagerDuty stand-in over real sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bot.devtools.stubs import PagerDutyStub
from bot.errors import IntegrationError
from bot.integrations.pagerduty import PagerDuty

KEY = "R0123456789abcdef0123456789abcdef"


@pytest.fixture
def stub() -> Iterator[PagerDutyStub]:
    with PagerDutyStub(routing_keys={KEY}) as running:
        yield running


class TestPagerDuty:
    def test_trigger_then_resolve_by_dedup_key(self, stub: PagerDutyStub) -> None:
        """A trigger opens the incident under its dedup key and a resolve closes it."""
        pd = PagerDuty(KEY, stub.base_url, timeout_s=5)
        key = pd.trigger("run-42:error_rate", "Error rate 8 % on prod", "critical", "migrate-bot/prod",
                         custom_details={"run": "42"})
        assert key == "run-42:error_rate" and stub.incidents[key] == "triggered"
        event = stub.events[-1]
        assert event["payload"] == {"summary": "Error rate 8 % on prod", "source": "migrate-bot/prod",
                                    "severity": "critical", "custom_details": {"run": "42"}}
        pd.resolve(key)
        assert stub.incidents[key] == "resolved"
        assert [e["event_action"] for e in stub.events] == ["trigger", "resolve"]

    def test_long_summary_is_cut_to_the_limit(self, stub: PagerDutyStub) -> None:
        """Summaries over 1024 characters are shortened rather than rejected."""
        PagerDuty(KEY, stub.base_url, timeout_s=5).trigger("k", "x" * 5000)
        assert len(stub.events[-1]["payload"]["summary"]) == 1024

    def test_rejected_event_is_one_line_without_the_key(self, stub: PagerDutyStub) -> None:
        """An unknown routing key gives an IntegrationError naming the problem, with the key redacted."""
        bad = "Rbadbadbadbadbadbadbadbadbadbad99"
        with pytest.raises(IntegrationError) as caught:
            PagerDuty(bad, stub.base_url, timeout_s=5).trigger("k", "summary")
        message = str(caught.value)
        assert "400" in message and "routing_key" in message and bad not in message and "\n" not in message

    def test_rate_limit_and_unreachable_are_integration_errors(self, stub: PagerDutyStub) -> None:
        """429 and a dead endpoint both raise IntegrationError."""
        stub.fail_next(429)
        with pytest.raises(IntegrationError, match="rate-limited"):
            PagerDuty(KEY, stub.base_url, timeout_s=5).resolve("k")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with pytest.raises(IntegrationError, match="unreachable"):
            PagerDuty(KEY, f"http://127.0.0.1:{port}", timeout_s=2).trigger("k", "summary")
