"""What ships: the Dockerfile passes hadolint, the manifest describes the app, the console script exists."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
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


def docker_context(root: Path) -> list[str]:
    """The files `docker build` sends for this repository: git's files filtered by .dockerignore as Docker reads it
    (each pattern matched against the path and its parent folders, the last matching line wins, `!` re-includes)."""
    import fnmatch

    rules = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, text=True, check=True).stdout.split()

    def excluded(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        verdict = False
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            pattern = pattern.replace("**/", "") if pattern.startswith("**/") else pattern
            targets = [p.split("/")[-1] for p in prefixes] if rule.lstrip("!").startswith("**/") else prefixes
            if any(fnmatch.fnmatchcase(t, pattern) for t in targets):
                verdict = not negate
        return verdict

    return [f for f in files if (root / f).is_file() and not excluded(f)]


class TestImage:
    def test_context_holds_the_product_only(self):
        """The image's build context has bot/, handlers/ and jobs/ but no development tools, tests or benchmarks."""
        context = docker_context(ROOT)
        assert "pyproject.toml" in context and "bot/cli/main.py" in context and "handlers/actions.py" in context
        assert "jobs/scheduler.py" in context
        shipped_dev = [f for f in context if f.startswith(("bot/devtools/", "tests/", "bench/", "scripts/", ".ci/"))]
        assert shipped_dev == []

    def test_product_runs_without_the_development_tools(self, tmp_path):
        """Every module in the image's context imports with bot/devtools absent, and `demo` answers in one line."""
        import setuptools

        for name in docker_context(ROOT):
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
        packages = setuptools.find_packages(str(tmp_path), include=["bot*", "handlers*", "jobs*"])
        assert "bot.runbook" in packages and not [p for p in packages if p.startswith("bot.devtools")]
        modules = sorted(str(p.relative_to(tmp_path).with_suffix("")).replace("/", ".").removesuffix(".__init__")
                         for p in tmp_path.rglob("*.py") if p.name != "__main__.py")
        code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
        # -S: no site hooks, so the checkout's editable install cannot lend the missing package; the libraries
        # come from this interpreter's site-packages on PYTHONPATH after the context.
        site = os.pathsep.join([str(tmp_path), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": site}
        result = subprocess.run([sys.executable, "-S", "-c", code, *modules], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        demo = subprocess.run([sys.executable, "-S", "-m", "bot", "demo"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert demo.returncode != 0 and "not part of this installation" in demo.stderr
        assert len(demo.stderr.strip().splitlines()) == 1 and "Traceback" not in demo.stderr


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
