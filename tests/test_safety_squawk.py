"""The squawk wrapper: JSON parsed, lines made 1-based, flags passed through."""

from __future__ import annotations

from bot.integrations.squawk import pg_version_arg, run_squawk, squawk_binary


class TestSquawkWrapper:
    def test_binary_found_in_venv(self):
        """The squawk-cli binary is found (next to the venv's python)."""
        assert squawk_binary().endswith("squawk")

    def test_pg_version_argument(self):
        """A major or a server_version_num becomes squawk's major.minor form."""
        assert pg_version_arg(15) == "15.0"
        assert pg_version_arg(150020) == "15.20"

    def test_clean_sql_gives_empty_list(self):
        """A safe statement gives no violations."""
        assert run_squawk('CREATE TABLE "t" ("id" bigint);', pg_version=15,
                          exclude=["require-lock-timeout", "require-statement-timeout"]) == []

    def test_violation_lines_are_one_based(self):
        """A DROP COLUMN on the second line is reported on line 2 with rule and message."""
        sql = "SELECT 1;\nALTER TABLE t DROP COLUMN c;\n"
        found = [v for v in run_squawk(sql, filename="m.sql") if v.rule == "ban-drop-column"]
        assert found and found[0].line == 2 and found[0].message

    def test_assume_in_transaction_flags_concurrent_index(self):
        """With assume-in-transaction a CIC next to another statement is flagged; a lone CIC is not."""
        two = 'CREATE TABLE "a" ("id" bigint);\nCREATE INDEX CONCURRENTLY "i" ON "b" ("x");\n'
        lone = 'CREATE INDEX CONCURRENTLY "i" ON "b" ("x");\n'
        rule = "ban-concurrent-index-creation-in-transaction"
        assert any(v.rule == rule for v in run_squawk(two, assume_in_transaction=True))
        assert not any(v.rule == rule for v in run_squawk(lone, assume_in_transaction=False))

    def test_syntax_error_reported(self):
        """Unparsable SQL comes back as a syntax-error violation, not an exception."""
        assert {v.rule for v in run_squawk("ALTER TABLE t ADD COLUMN;")} == {"syntax-error"}
