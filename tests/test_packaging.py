"""What ships: the Dockerfile passes hadolint, the manifest describes the app, the console script exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


class TestDockerfile:
    def test_hadolint_clean(self):
        """hadolint (from PyPI) finds nothing in the Dockerfile."""
        hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
        result = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_runs_as_non_root_with_healthcheck(self):
        """The image runs as a numeric non-root user, checks /healthz and starts `migrate-bot serve`."""
        text = (ROOT / "Dockerfile").read_text()
        assert "USER 10001" in text and "/healthz" in text and 'CMD ["migrate-bot", "serve"]' in text

    def test_ships_server_binaries_for_the_local_rehearsal_target(self):
        """initdb/pg_ctl for the throwaway verify/rehearsal cluster come with the image, without a default cluster."""
        text = (ROOT / "Dockerfile").read_text()
        assert " postgresql-15 " in text and "create_main_cluster = false" in text


class TestManifest:
    def test_manifest_declares_command_and_interactivity(self):
        """The Slack manifest has /migrate, interactivity, the scopes the bot calls, and a Socket Mode switch."""
        manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
        commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
        assert commands["/migrate"]["url"].endswith("/slack/events")
        assert manifest["settings"]["interactivity"]["is_enabled"] is True
        scopes = set(manifest["oauth_config"]["scopes"]["bot"])
        assert {"commands", "chat:write", "usergroups:read", "files:write"} <= scopes
        assert "socket_mode_enabled" in manifest["settings"]


class TestPackage:
    def test_console_script(self):
        """pyproject declares the `migrate-bot` console script and Python >= 3.11."""
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert project["scripts"]["migrate-bot"] == "bot.cli.main:main"
        assert project["requires-python"] == ">=3.11"

    def test_every_module_says_what_it_is_for(self):
        """Each module under bot/, handlers/ and jobs/ opens with a one-line docstring."""
        import ast

        missing = []
        for folder in ("bot", "handlers", "jobs"):
            for path in (ROOT / folder).rglob("*.py"):
                doc = ast.get_docstring(ast.parse(path.read_text()))
                if not doc or not doc.strip():
                    missing.append(str(path.relative_to(ROOT)))
        assert missing == []
