"""The edge translator (bot/edge.py): what a Slack user, an operator and the log see of each kind of error."""

from __future__ import annotations

import logging
import threading

import pytest

from bot import messages
from bot.edge import contained, one_line, operator_text, user_text
from bot.errors import ConfigError, NotAllowed, StateStoreUnavailable
from bot.store.runs import UNAVAILABLE

SECRET_URL = "postgresql://admin:hunter2secret@db.internal:5432/app"


class Boom(Exception):
    """A bug: neither a BotError nor anything the bot expects."""


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


class TestSlack:
    def test_redis_down_reads_nothing_was_changed(self, caplog):
        with caplog.at_level(logging.INFO):
            text = user_text(StateStoreUnavailable(UNAVAILABLE), doing="/migrate")
        assert text == messages.state_store_unavailable()
        assert not caplog.records  # an outage is not a bug

    def test_a_bot_error_reads_as_its_own_message(self, caplog):
        with caplog.at_level(logging.INFO):
            text = user_text(NotAllowed(f"🚫 No. Nothing was changed ({SECRET_URL})."), doing="click approve")
        assert text.startswith("🚫 No. Nothing was changed") and "hunter2secret" not in text
        assert not caplog.records

    def test_a_bug_reads_as_an_apology_and_logs_one_redacted_line(self, caplog):
        with caplog.at_level(logging.INFO):
            text = user_text(Boom(f"could not reach\n{SECRET_URL}\n  at line 3"), doing="click approve")
        assert text == messages.internal_error()
        assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.ERROR
        line = _logged(caplog)
        assert line.startswith("click approve failed: Boom: could not reach postgresql://")
        assert "hunter2secret" not in line and "\n" not in line


class TestCommandLine:
    def test_a_bot_error_is_its_message(self):
        assert operator_text(StateStoreUnavailable(UNAVAILABLE)) == UNAVAILABLE
        assert operator_text(ConfigError("environments file: prod: approvers missing")).startswith("environments")

    def test_a_bug_is_named_on_one_redacted_line(self):
        text = operator_text(KeyError(f"{SECRET_URL}\nsecond line"))
        assert text.startswith("unexpected error: KeyError: ")
        assert "hunter2secret" not in text and "\n" not in text


class TestBackground:
    def test_failures_stop_at_the_edge_as_one_log_line_each(self, caplog):
        with caplog.at_level(logging.INFO):
            with contained("slow-down notice"):
                raise StateStoreUnavailable(UNAVAILABLE)
            with contained("App Home"):
                raise Boom(SECRET_URL)
        levels = [record.levelno for record in caplog.records]
        assert levels == [logging.WARNING, logging.ERROR]
        assert "slow-down notice failed: state store unavailable" in _logged(caplog)
        assert "App Home failed: Boom: " in _logged(caplog) and "hunter2secret" not in _logged(caplog)

    def test_success_passes_through(self, caplog):
        done = threading.Event()
        with caplog.at_level(logging.INFO), contained("work"):
            done.set()
        assert done.is_set() and not caplog.records

    def test_a_keyboard_interrupt_is_not_swallowed(self):
        with pytest.raises(KeyboardInterrupt), contained("work"):
            raise KeyboardInterrupt


def test_one_line_is_short_single_and_redacted():
    text = one_line(Boom("x" * 1000 + f"\n{SECRET_URL}"))
    assert len(text) == 300 and "\n" not in text
    assert one_line(Boom()) == "Boom"
    assert "hunter2secret" not in one_line(Boom(SECRET_URL))
