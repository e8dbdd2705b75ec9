"""Run the squawk migration linter (the squawk-cli binary) and return its JSON findings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ConfigError, IntegrationError


class SquawkNotFound(ConfigError):
    """The squawk binary is not installed next to this Python or on PATH."""


class SquawkError(IntegrationError):
    """squawk ran but did not produce a report."""


@dataclass(frozen=True)
class SquawkViolation:
    """One squawk finding; lines and columns are 1-based (squawk's JSON is 0-based)."""

    rule: str
    level: str
    message: str
    help: str | None
    line: int
    column: int
    line_end: int
    column_end: int


def squawk_binary() -> str:
    """Path of the squawk binary: next to sys.executable first (the venv), else on PATH."""
    local = Path(sys.executable).parent / "squawk"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("squawk")
    if found:
        return found
    raise SquawkNotFound("squawk binary not found next to Python or on PATH; install the squawk-cli package")


def pg_version_arg(version: int) -> str:
    """squawk's --pg-version value ("major.minor") from a major (15) or a server_version_num (150020)."""
    if version >= 10000:
        return f"{version // 10000}.{version % 100}"
    return f"{version}.0"


def run_squawk(
    sql: str,
    *,
    filename: str = "migration.sql",
    pg_version: int | None = None,
    assume_in_transaction: bool = True,
    exclude: Sequence[str] = (),
    timeout: float = 60.0,
) -> list[SquawkViolation]:
    """Lint one SQL text with ``--reporter json`` and return the violations (empty list when clean).

    squawk runs in an empty directory so a stray .squawk.toml cannot change the rules.
    """
    cmd = [squawk_binary(), "--reporter", "json", "--stdin-filepath", filename]
    if pg_version:
        cmd += ["--pg-version", pg_version_arg(pg_version)]
    cmd.append("--assume-in-transaction" if assume_in_transaction else "--no-assume-in-transaction")
    if exclude:
        cmd += ["--exclude", ",".join(exclude)]
    with tempfile.TemporaryDirectory(prefix="squawk-") as cwd:
        try:
            proc = subprocess.run(cmd, input=sql, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise SquawkError(f"squawk timed out after {timeout:.0f}s on {filename}") from exc
        except OSError as exc:
            raise SquawkError(f"could not run squawk: {exc}") from exc
    out = proc.stdout.strip()
    if not out:
        if proc.returncode == 0:
            return []
        detail = (proc.stderr.strip().splitlines() or ["no output"])[0]
        raise SquawkError(f"squawk failed on {filename} (exit {proc.returncode}): {detail}")
    try:
        items = json.loads(out)
    except json.JSONDecodeError as exc:
        raise SquawkError(f"squawk printed invalid JSON for {filename}: {exc}") from exc
    return [
        SquawkViolation(
            rule=item.get("rule_name", ""),
            level=item.get("level", "Warning"),
            message=item.get("message", ""),
            help=item.get("help"),
            line=int(item.get("line", 0)) + 1,
            column=int(item.get("column", 0)) + 1,
            line_end=int(item.get("line_end", item.get("line", 0))) + 1,
            column_end=int(item.get("column_end", 0)) + 1,
        )
        for item in items
    ]
