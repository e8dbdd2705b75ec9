"""`migrate-bot lint`: documented exit codes, text and JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli.main import build_parser, main

DATA = Path(__file__).resolve().parent / "data" / "safety"


class TestLintExitCodes:
    def test_clean_directory_exits_0(self, capsys):
        """Only safe migrations: exit 0, one summary line per migration."""
        assert main(["lint", str(DATA / "safe")]) == 0
        out = capsys.readouterr().out
        assert "20240101000000_init:" in out and "20240102000000_more:" in out
        assert "HIGH" not in out

    def test_high_findings_exit_1(self, capsys):
        """A non-nullable column and a dropped column: exit 1, findings indented with why and alternative."""
        assert main(["lint", str(DATA / "risky")]) == 1
        out = capsys.readouterr().out
        assert "20240201000000_breaking: 2 high" in out
        assert "  HIGH" in out and "why:" in out and "instead:" in out
        assert "risky: removing columns" in out

    def test_missing_directory_exits_2(self, capsys, tmp_path):
        """A missing DIR is a usage error: exit 2 and one line, no traceback."""
        assert main(["lint", str(tmp_path / "nope")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err

    @pytest.mark.parametrize("url", ["not a url", "postgresql://postgres@127.0.0.1:1/none"])
    def test_bad_database_url_exits_2(self, capsys, url):
        """An unparsable or unreachable --database-url: exit 2 with one line."""
        assert main(["lint", str(DATA / "safe"), "--database-url", url]) == 2
        err = capsys.readouterr().err
        assert err.startswith("migrate-bot lint: cannot connect") and err.count("\n") == 1

    def test_exit_codes_documented_in_help(self):
        """The lint parser's help text documents the three exit codes."""
        parser = build_parser()
        sub = next(a for a in parser._actions if a.dest == "command").choices["lint"]
        text = sub.format_help()
        assert "exit codes:" in text and "0  no high" in text and "1  at least one high" in text and "2  usage" in text


class TestLintJson:
    def test_json_output_is_valid(self, capsys):
        """--format json prints one JSON document mirroring Review.to_json()."""
        assert main(["lint", str(DATA / "risky"), "--format", "json"]) == 1
        data = json.loads(capsys.readouterr().out)
        assert data["has_high"] is True and data["counts"]["high"] == 2
        names = [m["name"] for m in data["migrations"]]
        assert names == ["20240101000000_init", "20240201000000_breaking"]
        rules = {f["rule"] for f in data["migrations"][1]["findings"]}
        assert {"required-column", "drop-column"} <= rules

    def test_json_with_database(self, capsys, scratch_db):
        """With --database-url the review reads the server version and marks with_database."""
        assert main(["lint", str(DATA / "safe"), "--format", "json", "--database-url", scratch_db]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["with_database"] is True and data["pg_version"] >= 120000


def _repo(root: Path, migrations: dict[str, str]) -> Path:
    """A repository (with .git) holding prisma/migrations/<name>/migration.sql; returns the migrations folder."""
    (root / ".git").mkdir()
    folder = root / "prisma" / "migrations"
    for name, sql in migrations.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "migration.sql").write_text(sql)
    return folder


MIGRATIONS = {
    "20240101000000_init": 'CREATE TABLE "User" ("id" TEXT NOT NULL, "name" TEXT, CONSTRAINT "User_pkey" '
                           'PRIMARY KEY ("id"));\n',
    "20240201000000_legacy": '-- CreateIndex\nCREATE INDEX "User_name_idx" ON "User"("name");\n',
    "20240301000000_index": '-- CreateIndex\nCREATE INDEX "User_id_name_idx" ON "User"("id", "name");\n',
}


def _squawk_rules(data: dict, migration: str) -> set[str]:
    found = next(m for m in data["migrations"] if m["name"] == migration)["findings"]
    return {rule for f in found for rule in f["squawk_rules"]}


class TestSquawkConfig:
    def test_repository_squawk_toml_is_honoured_and_named(self, capsys, tmp_path):
        """A .squawk.toml at the repository root: its excluded rules and paths and pg_version apply to squawk, and
        the review names the file with what it applied; the lock analysis still reviews every file."""
        folder = _repo(tmp_path, MIGRATIONS)
        (tmp_path / ".squawk.toml").write_text(
            'excluded_rules = ["require-concurrent-index-creation"]\nexcluded_paths = ["*_legacy/migration.sql"]\n'
            'pg_version = "13.0"\n')
        assert main(["lint", str(folder), "--format", "json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["squawk_config"] == (f"squawk config: {tmp_path / '.squawk.toml'} (excluded rules: "
                                         "require-concurrent-index-creation; excluded paths: *_legacy/migration.sql; "
                                         "pg_version 13.0)")
        assert data["pg_version"] == 13
        everything = set().union(*(_squawk_rules(data, name) for name in MIGRATIONS))
        assert "require-concurrent-index-creation" not in everything
        assert "non-concurrent-index" in {f["rule"] for m in data["migrations"] for f in m["findings"]}
        assert _squawk_rules(data, "20240201000000_legacy") == set()  # squawk skipped it ...
        legacy = next(m for m in data["migrations"] if m["name"] == "20240201000000_legacy")["findings"]
        assert [f["rule"] for f in legacy] == ["non-concurrent-index"]  # ... the lock analysis did not
        assert _squawk_rules(data, "20240301000000_index") == {"require-statement-timeout"}  # squawk ran there
        main(["lint", str(folder)])
        assert f"squawk config: {tmp_path / '.squawk.toml'}" in capsys.readouterr().out

    def test_config_next_to_the_migrations_wins_and_without_one_squawk_rules_all_apply(self, capsys, tmp_path):
        """The file next to the migrations is the one used; with none, every squawk rule is reported."""
        folder = _repo(tmp_path, MIGRATIONS)
        assert main(["lint", str(folder), "--format", "json"]) == 0
        plain = json.loads(capsys.readouterr().out)
        assert plain["squawk_config"] is None
        assert "require-concurrent-index-creation" in _squawk_rules(plain, "20240301000000_index")
        (tmp_path / ".squawk.toml").write_text('excluded_rules = ["ban-drop-column"]\n')
        (folder / ".squawk.toml").write_text('excluded_rules = ["require-concurrent-index-creation"]\n')
        main(["lint", str(folder), "--format", "json"])
        data = json.loads(capsys.readouterr().out)
        assert str(folder / ".squawk.toml") in data["squawk_config"]
        assert "require-concurrent-index-creation" not in _squawk_rules(data, "20240301000000_index")

    def test_broken_squawk_toml_is_one_line_exit_2(self, capsys, tmp_path):
        """An unreadable .squawk.toml: exit 2, one line naming the file, nothing reviewed."""
        folder = _repo(tmp_path, MIGRATIONS)
        (folder / ".squawk.toml").write_text('excluded_rules = "require-concurrent-index-creation"\n')
        assert main(["lint", str(folder)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.count("\n") == 1 and ".squawk.toml: excluded_rules must be a list" in captured.err


class TestStatementTimeout:
    def test_rule_kept_unless_the_runner_sets_statement_timeout(self, capsys, tmp_path):
        """Without a statement_timeout squawk's require-statement-timeout is a low finding per file; with
        --statement-timeout-ms (migrate.statement_timeout_ms) it is gone and the review says what is set."""
        folder = _repo(tmp_path, MIGRATIONS)
        main(["lint", str(folder), "--format", "json"])
        unset = json.loads(capsys.readouterr().out)
        lows = [f for m in unset["migrations"] for f in m["findings"] if f["rule"] == "require-statement-timeout"]
        assert {f["migration"] for f in lows} == {"20240201000000_legacy", "20240301000000_index"}  # not init
        assert {f["level"] for f in lows} == {"low"}
        assert "statement_timeout not set by the bot" in unset["timeouts"]
        assert not any(f["rule"] == "require-lock-timeout" for m in unset["migrations"] for f in m["findings"])
        main(["lint", str(folder), "--format", "json", "--statement-timeout-ms", "60000"])
        data = json.loads(capsys.readouterr().out)
        assert not any(f["rule"] == "require-statement-timeout" for m in data["migrations"] for f in m["findings"])
        assert data["timeouts"] == "lock_timeout set by the bot; statement_timeout 60000 ms set by the bot"


class TestStartUp:
    def test_overview_help_matches_each_command_module(self):
        """`migrate-bot --help` lists every command with the help its module registers (no drift between the
        table main.py prints without importing and the parsers themselves)."""
        from bot.cli.main import COMMANDS

        parser = build_parser()
        sub = next(a for a in parser._actions if a.dest == "command")
        registered = {choice.dest: choice.help for choice in sub._choices_actions}
        assert registered == {name: text for name, (_module, text) in COMMANDS.items()}

    @pytest.mark.parametrize("argv", [["--help"], ["lint", "--help"]])
    def test_help_loads_no_driver_parser_or_sdk(self, argv, tmp_path):
        """`migrate-bot --help` and `migrate-bot lint --help` start without loading psycopg, pglast, redis, the
        Slack SDK, httpx or pydantic (they cost ~1 CPU-second of imports), and print the help."""
        import subprocess
        import sys

        heavy = ["psycopg", "pglast", "redis", "slack_sdk", "slack_bolt", "httpx", "pydantic", "boto3"]
        probe = ("import sys; from bot.cli.main import main\n"
                 f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
                 f"print('LOADED', sorted(m for m in {heavy!r} if m in sys.modules))")
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                              cwd=Path(__file__).resolve().parents[1])
        assert "usage: migrate-bot" in done.stdout
        assert done.stdout.strip().splitlines()[-1] == "LOADED []", done.stdout[-300:]
