"""The environments file: the shipped example loads, and every mistake is one line naming the field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.config import load_config
from bot.configcheck import reserved_names
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


# ---- check-config: the semantic checks, one line each (bot.configcheck) ------------------------------------------

def run_cli(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m bot ARGS` with no Slack settings and MIGRATE_BOT_CONFIG only when ``config`` is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MIGRATE_BOT_"))}
    if config is not None:
        env["MIGRATE_BOT_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "bot", *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def env_block(**overrides: object) -> dict[str, object]:
    """One environment that passes every check: a database, a backup, two approvers besides the requester."""
    env: dict[str, object] = {"channel": "C1AAA", "requesters": ["U1AAA"], "approvers": ["U2BBB", "U3CCC"],
                              "database_url": "postgresql://app@db.internal:5432/app",
                              "backup": {"method": "pg_dump", "local_dir": "/var/backups"}}
    env.update(overrides)
    return env


def write(tmp_path: Path, envs: dict[str, object], name: str = "env.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"environments": envs}, sort_keys=False))
    return path


def finding_lines(result: subprocess.CompletedProcess[str], level: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if f": {level}: " in line]


# name -> (environments, the expected error line's distinctive text)
ERROR_CASES: dict[str, tuple[dict[str, object], str]] = {
    "only approver is the requester": (
        {"prod": env_block(requesters=["U1AAA"], approvers=["U1AAA"], approvals_required=1)},
        "environments.prod: no run can ever be approved: a requester cannot approve their own run, and besides "
        "U1AAA only 0 approver(s) remain for approvals_required 1"),
    "three required, one listed": (
        {"prod": env_block(approvers=["U1AAA"], approvals_required=3)},
        "environments.prod: approvals_required is 3 but only 1 approver(s) are listed: no run can ever be approved"),
    "one requester stuck": (
        {"prod": env_block(requesters=["U1AAA", "U2BBB"], approvers=["U2BBB", "U3CCC"], approvals_required=2)},
        "environments.prod: a run started by U2BBB can never be approved"),
    "unknown staging_env": (
        {"prod": env_block(safety={"staging_env": "stagin"}), "staging": env_block(channel="C2BBB")},
        "environments.prod.safety.staging_env: unknown environment 'stagin' (known: prod, staging)"),
    "staging_env is itself": (
        {"prod": env_block(safety={"staging_env": "prod"})},
        "environments.prod.safety.staging_env: 'prod' is this environment itself"),
    "maintenance by ECS without a service": (
        {"prod": env_block(maintenance={"enabled": True, "method": "ecs_task_definition",
                                        "task_definition": "api-maint:1"})},
        "environments.prod.maintenance: method ecs_task_definition switches the ECS service named by "
        "deploy.cluster and deploy.service: set both"),
    "pg_dump without a database": (
        {"prod": env_block(database_url=None)},
        "environments.prod.backup: method pg_dump needs the environment's database_url"),
    "target_group without load_balancer": (
        {"prod": env_block(monitoring={"target_group": "targetgroup/api/1"})},
        "environments.prod.monitoring.target_group: narrows the load balancer's metrics"),
    "environment named like a verb": (
        {"status": env_block()},
        "environments.status: the name 'status' is a /migrate verb, so `/migrate status` could never start a run"),
}


class TestCheckConfig:
    def test_a_clean_file_exits_0(self, tmp_path):
        """A file that passes every check: `ok` with its environments, exit 0."""
        result = run_cli("check-config", str(write(tmp_path, {"prod": env_block()})))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == f"{tmp_path / 'env.yml'}: ok (prod)"

    @pytest.mark.parametrize("case", sorted(ERROR_CASES))
    def test_each_error_is_one_line_and_exit_2(self, tmp_path, case):
        """Each mistake that parses but cannot work: one `error:` line naming the place, exit 2."""
        envs, expected = ERROR_CASES[case]
        result = run_cli("check-config", str(write(tmp_path, envs)))
        assert result.returncode == 2, result.stdout + result.stderr
        errors = finding_lines(result, "error")
        assert len(errors) == 1, result.stdout
        assert expected in errors[0]
        assert "Traceback" not in result.stdout + result.stderr

    def test_user_groups_among_approvers_are_not_second_guessed(self, tmp_path):
        """A group's members are unknown from the file: S… approvers never make approvals look impossible."""
        result = run_cli("check-config", str(write(tmp_path, {"prod": env_block(
            requesters=["U1AAA"], approvers=["U1AAA", "S0DBA"], approvals_required=3)})))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_missing_database_url_is_a_warning_exit_1(self, tmp_path):
        """No database_url and no backup: warnings (the bot can start, the migrate step will refuse), exit 1."""
        path = write(tmp_path, {"prod": env_block(database_url=None, backup=None)})
        result = run_cli("check-config", str(path))
        assert result.returncode == 1, result.stdout + result.stderr
        warnings = finding_lines(result, "warning")
        assert f"{path}: warning: environments.prod.database_url: not set: check and lint have nothing to read and " \
               "the migrate step will refuse every run" in warnings
        assert not finding_lines(result, "error")
        assert result.stdout.splitlines()[-1] == f"{path}: 0 errors, {len(warnings)} warnings"

    def test_a_token_variable_named_but_unset_is_a_warning(self, tmp_path):
        """`token_env` names a variable this process lacks: the first release or review would fail, so say so now,
        naming the variable (never a value); set, it is quiet."""
        path = write(tmp_path, {"prod": env_block(
            migrate={"source": {"git": {"url": "https://github.com/acme/api.git", "token_env": "MB_TEST_GIT_TOKEN"}}},
            review={"github": {"repo": "acme/api", "token_env": "MB_TEST_GH_TOKEN"}})})
        result = run_cli("check-config", str(path))
        assert result.returncode == 1, result.stdout + result.stderr
        assert finding_lines(result, "warning") == [
            f"{path}: warning: environments.prod.migrate.source.git.token_env: MB_TEST_GIT_TOKEN is not set in this "
            "process's environment: fetching a private repository will fail",
            f"{path}: warning: environments.prod.review.github.token_env: MB_TEST_GH_TOKEN is not set in this "
            "process's environment: GitHub will refuse or rate-limit reading the pull requests",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MIGRATE_BOT_"))}
        env.update(MB_TEST_GIT_TOKEN="ghp_secretvalue1", MB_TEST_GH_TOKEN="ghp_secretvalue2")
        quiet = subprocess.run([sys.executable, "-m", "bot", "check-config", str(path)], env=env,
                               capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert quiet.returncode == 0, quiet.stdout + quiet.stderr
        assert "ghp_secretvalue" not in quiet.stdout + quiet.stderr

    def test_staging_env_without_a_database_is_a_warning(self, tmp_path):
        path = write(tmp_path, {"prod": env_block(safety={"staging_env": "staging"}),
                                "staging": env_block(channel="C2BBB", database_url=None, backup=None)})
        result = run_cli("check-config", str(path))
        assert result.returncode == 1, result.stdout + result.stderr
        assert (f"{path}: warning: environments.prod.safety.staging_env: 'staging' has no database_url, so its "
                "_prisma_migrations cannot be read as staging evidence") in finding_lines(result, "warning")

    @pytest.mark.parametrize("verb", sorted(reserved_names()))
    def test_every_verb_is_a_reserved_name(self, tmp_path, verb):
        """Every first word of a `/migrate` verb (from bot.runbook.access.VERBS) is refused as an environment."""
        result = run_cli("check-config", str(write(tmp_path, {verb: env_block()})))
        assert result.returncode == 2
        assert f"environments.{verb}: the name '{verb}' is a /migrate verb" in result.stdout

    def test_verbs_come_from_the_access_table(self):
        """The reserved names are the access table's verbs, not a copy that could drift."""
        from bot.runbook import access

        assert reserved_names() == {v.split()[0] for v in access.VERBS if v != access.ENV_VERB}
        assert {"help", "status", "cancel", "check", "lint", "timeline", "schedule", "windows"} <= reserved_names()

    def test_duplicate_environment_is_refused_with_both_lines(self, tmp_path):
        """`prod:` twice: the second would silently win; refused naming both lines."""
        path = tmp_path / "env.yml"
        path.write_text("environments:\n  prod:\n    channel: C1AAA\n    requesters: [U1AAA]\n"
                        "    approvers: [U2BBB]\n  prod:\n    channel: C2BBB\n    requesters: [U1AAA]\n"
                        "    approvers: [U2BBB]\n")
        result = run_cli("check-config", str(path))
        assert result.returncode == 2
        assert result.stderr.strip() == (f"migrate-bot: {path}: line 6: duplicate key 'prod' (first on line 2; "
                                         "the second would silently win)")

    def test_duplicate_nested_key_is_refused(self, tmp_path):
        path = tmp_path / "env.yml"
        path.write_text("environments:\n  prod:\n    channel: C1AAA\n    requesters: [U1AAA]\n"
                        "    approvers: [U2BBB]\n    approvals_required: 1\n    approvals_required: 2\n")
        with pytest.raises(ConfigError, match=r"line 7: duplicate key 'approvals_required' \(first on line 6"):
            load_config(path, {})

    def test_merge_keys_still_work(self, tmp_path):
        """`<<: *base` with an override is YAML's merge, not a duplicate."""
        path = tmp_path / "env.yml"
        path.write_text("base: &base\n  channel: C1AAA\n  requesters: [U1AAA]\n  approvers: [U2BBB]\n"
                        "environments:\n  prod:\n    <<: *base\n    channel: C2BBB\n")
        with pytest.raises(ConfigError, match="base"):  # the top-level helper key is unknown, not a duplicate
            load_config(path, {})
        path.write_text("environments:\n  prod: &p\n    channel: C1AAA\n    requesters: [U1AAA]\n"
                        "    approvers: [U2BBB]\n  staging:\n    <<: *p\n    channel: C2BBB\n")
        assert load_config(path, {}).environments["staging"].channel == "C2BBB"

    def test_rehearsal_on_the_production_server_is_refused(self, tmp_path):
        path = write(tmp_path, {"prod": env_block(
            database_url="postgresql://app:pw-123456@db.internal:5432/app",
            rehearsal={"target": "database_url", "database_url": "postgresql://r@db.internal/app"})})
        result = run_cli("check-config", str(path))
        assert result.returncode == 2
        assert "rehearsal.database_url points at the environment's own server (db.internal:5432)" in result.stderr
        assert "pw-123456" not in result.stderr + result.stdout

    def test_deploy_enabled_without_a_service_is_refused(self, tmp_path):
        result = run_cli("check-config", str(write(tmp_path, {"prod": env_block(deploy={"enabled": True})})))
        assert result.returncode == 2
        assert "environments.prod.deploy: cluster and service are required when deploy is enabled" in result.stderr

    def test_path_argument_wins_over_the_environment(self, tmp_path):
        good = write(tmp_path, {"prod": env_block()}, "good.yml")
        bad = write(tmp_path, {"status": env_block()}, "bad.yml")
        assert run_cli("check-config", str(good), config=bad).returncode == 0
        assert run_cli("check-config", config=bad).returncode == 2

    @pytest.mark.parametrize("verb", ["serve", "check-config", "status"])
    def test_no_config_is_refused_not_the_demo_one(self, verb):
        """Without MIGRATE_BOT_CONFIG (or a path) nothing falls back to the bundled demo file."""
        result = subprocess.run(
            [sys.executable, "-m", "bot", verb],
            env={"PATH": os.environ["PATH"], "SLACK_BOT_TOKEN": "xoxb-1-2", "SLACK_SIGNING_SECRET": "s"},
            capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 2
        assert result.stderr.strip() == (
            "migrate-bot: no environments file given: set MIGRATE_BOT_CONFIG to its path (or `serve --config PATH`, "
            "`check-config PATH`; examples/environments.yml is a commented starting point)")
        assert "local" not in result.stdout

    def test_the_shipped_files_are_clean(self):
        """The example and the demo's own file pass every check."""
        result = run_cli("check-config", str(ROOT / "bot" / "defaults" / "environments.yml"))
        assert result.returncode == 0, result.stdout + result.stderr
        env = {**os.environ, **EXAMPLE_ENV}
        example = subprocess.run([sys.executable, "-m", "bot", "check-config", str(ROOT / "examples" / "environments.yml")],
                                 env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert example.returncode == 0, example.stdout + example.stderr
