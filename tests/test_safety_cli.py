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
