"""The environments file: the shipped example loads, and every mistake is one line naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import load_config
from bot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ENV = {"PROD_DATABASE_URL": "postgresql://app:pw@db/app", "STAGING_DATABASE_URL": "postgresql://s@db/s"}


class TestExampleConfig:
    def test_example_loads(self):
        """The commented example in examples/ is valid and keeps run-time templates literal."""
        config = load_config(ROOT / "examples" / "environments.yml", EXAMPLE_ENV)
        prod = config.environments["prod"]
        assert prod.name == "prod" and prod.approvals_required == 1
        assert prod.backup and prod.backup.method == "rds_snapshot"
        assert prod.smoke[3].headers["Authorization"] == "Bearer ${token}"
        assert "${smoke_id}" in str(prod.smoke[1].json_body)

    def test_missing_variable_is_named(self):
        """A ${VAR} that is not set is reported with its name and place."""
        with pytest.raises(ConfigError, match="PROD_DATABASE_URL"):
            load_config(ROOT / "examples" / "environments.yml", {})


BAD_FILES = {
    "channel": ("environments:\n  prod:\n    channel: '#ops'\n    requesters: [U1AAA]\n    approvers: [U2BBB]\n",
                "environments.prod.channel"),
    "approvals": ("environments:\n  prod:\n    channel: C1AAA\n    requesters: [U1AAA]\n    approvers: [U2BBB]\n"
                  "    approvals_required: two\n", "environments.prod.approvals_required"),
    "missing": ("environments:\n  prod:\n    channel: C1AAA\n    approvers: [U2BBB]\n",
                "environments.prod.requesters: required field is missing"),
    "unknown": ("environments:\n  prod:\n    channel: C1AAA\n    requesters: [U1]\n    approvers: [U2BBB]\n",
                "environments.prod.requesters"),
    "typo": ("environments:\n  prod:\n    chanel: C1AAA\n    requesters: [U1AAA]\n    approvers: [U2BBB]\n",
             "environments.prod"),
    "yaml": ("environments: [\n", "line"),
    "empty": ("", "expected a mapping"),
}


class TestBadConfig:
    @pytest.mark.parametrize("case", sorted(BAD_FILES))
    def test_error_names_the_field(self, tmp_path, case):
        """Each kind of mistake gives a ConfigError naming where it is."""
        text, expected = BAD_FILES[case]
        path = tmp_path / "env.yml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path, {})
        assert expected in str(info.value)
        assert "\n" not in str(info.value)

    def test_serve_exits_2_with_one_line(self, tmp_path):
        """`migrate-bot serve` with a bad file exits 2 and prints one line, no traceback."""
        path = tmp_path / "env.yml"
        path.write_text(BAD_FILES["approvals"][0])
        env = {"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": "xoxb-1-2", "SLACK_SIGNING_SECRET": "s",
               "MIGRATE_BOT_CONFIG": str(path)}
        result = subprocess.run([sys.executable, "-m", "bot", "serve"], env=env, capture_output=True, text=True,
                                timeout=60, cwd=ROOT)
        assert result.returncode == 2
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert "environments.prod.approvals_required" in lines[0]
        assert "Traceback" not in result.stderr + result.stdout
