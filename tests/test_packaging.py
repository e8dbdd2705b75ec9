"""What ships: the Dockerfile passes hadolint, the manifest describes the app, the console script exists."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
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

    def test_ships_pg_dump_17_and_the_servers_of_every_supported_major(self):
        """pg_dump 17 (dumps and restores 13-17) and initdb/pg_ctl of 13-17 from PGDG, without a default cluster."""
        text = (ROOT / "Dockerfile").read_text()
        assert 'ARG PG_SERVER_MAJORS="13 14 15 16 17"' in text and "postgresql-client-17" in text
        assert '"postgresql-${major}"' in text and "create_main_cluster = false" in text
        assert "pg_dump --version | grep -F '(PostgreSQL) 17'" in text

    def test_pgdg_key_is_checked_by_fingerprint(self):
        """The PGDG repository is trusted through its key, taken from Debian's package and checked by fingerprint."""
        text = (ROOT / "Dockerfile").read_text()
        assert "fpr:::::::::B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8:" in text
        assert "Signed-By: /usr/share/keyrings/pgdg.asc" in text and "COPY --from=pgdg-key /pgdg.asc" in text

    def test_no_blanket_ignores_and_each_inline_one_justified(self):
        """.hadolint.yaml ignores no rule; each inline `hadolint ignore` follows a comment that says why."""
        config = yaml.safe_load((ROOT / ".hadolint.yaml").read_text())
        assert not config.get("ignored")
        lines = (ROOT / "Dockerfile").read_text().splitlines()
        ignores = [i for i, line in enumerate(lines) if line.startswith("# hadolint ignore=")]
        assert ignores
        for i in ignores:
            reason = " ".join(line.lstrip("# ") for line in lines[i - 3:i] if line.startswith("#"))
            assert len(reason) > 80, f"line {i + 1}: {lines[i]} has no reason above it"

    def test_installs_from_the_runtime_lock_with_hashes(self):
        """The image's Python packages come from requirements/runtime.txt, hash-checked; the project adds none."""
        text = (ROOT / "Dockerfile").read_text()
        assert "--require-hashes -r requirements/runtime.txt" in text
        assert "pip install --no-cache-dir --no-deps --no-build-isolation ." in text
        assert "dev.txt" not in text and "[test]" not in text


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
        assert "requirements/runtime.txt" in context and "requirements/dev.txt" not in context
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


def locked(path: Path) -> dict[str, list[str]]:
    """{normalised name: [version, ...]} of a lock (a name can be locked twice under exclusive markers), each entry
    checked to carry at least one sha256 hash."""
    import re

    versions: dict[str, list[str]] = {}
    entries = re.split(r"\n(?=[A-Za-z0-9])", path.read_text())
    for entry in entries:
        if entry.startswith("#") or not entry.strip():
            continue
        head = entry.split()[0]
        name, _, version = head.partition("==")
        assert version, f"{path.name}: {head} is not pinned with =="
        assert "--hash=sha256:" in entry, f"{path.name}: {head} has no hash"
        versions.setdefault(re.sub(r"[-_.]+", "-", name).lower(), []).append(version)
    return versions


class TestLocks:
    RUNTIME = ROOT / "requirements" / "runtime.txt"
    DEV = ROOT / "requirements" / "dev.txt"

    @staticmethod
    def _requirements(group: str | None) -> list:
        from packaging.requirements import Requirement

        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        raw = project["dependencies"] if group is None else project["optional-dependencies"][group]
        return [Requirement(r) for r in raw]

    def _covers(self, lock: dict[str, list[str]], requirements: list) -> list[str]:
        import re

        stale = []
        for requirement in requirements:
            name = re.sub(r"[-_.]+", "-", requirement.name).lower()
            if not any(requirement.specifier.contains(v, prereleases=True) for v in lock.get(name, [])):
                stale.append(f"{requirement} (locked: {lock.get(name)})")
        return stale

    def test_every_dependency_is_locked_with_hashes(self):
        """Each pyproject requirement has a pinned, hashed version in its lock that satisfies it: a dependency added
        or bumped without `make lock` fails here."""
        runtime, dev = locked(self.RUNTIME), locked(self.DEV)
        assert self._covers(runtime, self._requirements(None)) == []
        for group in ("test", "dev"):
            assert self._covers(dev, self._requirements(group)) == []
        assert self._covers(dev, self._requirements(None)) == []
        assert "setuptools" in runtime and "setuptools" in dev  # the project installs without build isolation

    def test_runtime_lock_holds_no_test_or_dev_tool(self):
        """The image and the demo get none of pytest, moto, hypothesis, ruff, mypy, import-linter, vulture, hadolint."""
        runtime = locked(self.RUNTIME)
        tools = {r.name.lower() for group in ("test", "dev") for r in self._requirements(group)}
        assert tools and not tools & set(runtime)

    def test_dev_lock_agrees_with_the_runtime_lock(self):
        """Tests run against the very versions the image ships (the dev lock is compiled under the runtime one)."""
        runtime, dev = locked(self.RUNTIME), locked(self.DEV)
        assert {name: dev.get(name) for name in runtime} == runtime


def make_dry_run(target: str, tmp_path: Path) -> str:
    """What `make TARGET` would run in a fresh checkout with no virtualenv yet (make -n prints, runs nothing)."""
    result = subprocess.run(["make", "-n", "-s", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


class TestMakefile:
    def test_demo_installs_the_runtime_lock_only(self, tmp_path):
        """`make demo` installs requirements/runtime.txt with hashes and the project without dependencies."""
        out = make_dry_run("demo", tmp_path)
        assert "--require-hashes -r requirements/runtime.txt" in out
        assert "--no-deps --no-build-isolation -e ." in out
        assert "dev.txt" not in out and "[test]" not in out

    @pytest.mark.parametrize("target", ["test", "lint"])
    def test_test_and_lint_install_the_dev_lock(self, tmp_path, target):
        out = make_dry_run(target, tmp_path)
        assert "--require-hashes -r requirements/dev.txt" in out

    def test_lock_rewrites_both_locks_with_hashes(self, tmp_path):
        """`make lock` is the one command that regenerates both locks (the dev one constrained by the runtime one)."""
        out = make_dry_run("lock", tmp_path).replace("\\\n", " ")
        compiles = [line for line in out.splitlines() if "uv pip compile" in line]
        assert len(compiles) == 2 and all("--generate-hashes" in line for line in compiles)
        assert "-o requirements/runtime.txt" in compiles[0] and "-c requirements/runtime.txt" in out

    def test_ci_installs_through_make(self):
        """.ci/run starts from no virtualenv and installs only through the Makefile's locked targets."""
        text = (ROOT / ".ci" / "run").read_text()
        assert "rm -rf .venv" in text and "make lint" in text and "make test" in text
        assert "pip install" not in text


class TestDeploy:
    TASK = ROOT / "deploy" / "ecs-task-definition.json"

    def test_task_definition_registers(self, moto_reset):
        """The example task definition is accepted by register-task-definition (botocore validates it against ECS's
        API model; moto stores it) and comes back with its health check, secrets and logs."""
        import boto3

        ecs = boto3.client("ecs", endpoint_url=moto_reset, region_name="us-east-1")
        registered = ecs.register_task_definition(**json.loads(self.TASK.read_text()))["taskDefinition"]
        [container] = ecs.describe_task_definition(taskDefinition=registered["taskDefinitionArn"])[
            "taskDefinition"]["containerDefinitions"]
        assert container["healthCheck"]["command"][-1].endswith("/healthz', timeout=4)")
        assert container["logConfiguration"]["logDriver"] == "awslogs"
        assert {s["name"] for s in container["secrets"]} >= {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"}

    def test_secrets_come_from_secrets_manager_or_ssm_and_match_the_image(self):
        """No token or database URL in plain environment; the health check and user are the image's own."""
        [container] = json.loads(self.TASK.read_text())["containerDefinitions"]
        assert all(s["valueFrom"].startswith(("arn:aws:secretsmanager:", "arn:aws:ssm:")) for s in container["secrets"])
        plain = {e["name"] for e in container["environment"]}
        assert not [n for n in plain if any(w in n for w in ("TOKEN", "SECRET", "PASSWORD", "DATABASE_URL"))]
        dockerfile = (ROOT / "Dockerfile").read_text()
        health = container["healthCheck"]["command"]
        assert health[0] == "CMD" and json.dumps(health[1:]) in dockerfile.replace("CMD [", "[")
        assert f"USER {container['user']}" in dockerfile

    def test_iam_policy_is_valid_json_with_named_statements(self):
        policy = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())
        sids = [s["Sid"] for s in policy["Statement"]]
        assert policy["Version"] == "2012-10-17" and len(sids) == len(set(sids))
