"""The Prisma CLI runner: `prisma migrate deploy|status|resolve` as a subprocess, its output parsed into results."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.integrations.prisma.migrations import AppliedMigration, DeployResult, PrismaError
from bot.redact import redact


@dataclass(frozen=True)
class CliStatus:
    """The parsed result of `prisma migrate status`."""

    pending: list[str]
    failed: list[str]
    up_to_date: bool
    exit_code: int
    output: str


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


_PENDING_RE = re.compile(r"Following migrations? have not yet been applied:\n((?:.+\n)+?)\n")


_FAILED_RE = re.compile(r"Following migrations? have failed:\n((?:.+\n)+?)\n")


_APPLIED_RE = re.compile(r"^\s*└─ (.+)/\s*$", re.MULTILINE)


_ERROR_CODE_RE = re.compile(r"^Error: (P\d{4})\b:?[ \t]*(.*)$", re.MULTILINE)


_MIGRATION_NAME_RE = re.compile(r"^Migration name: (.+)$", re.MULTILINE)


_DB_ERROR_CODE_RE = re.compile(r"^Database error code: (\S+)$", re.MULTILINE)


_DB_ERROR_RE = re.compile(r"^Database error:\n(.+)$", re.MULTILINE)


_P3009_RE = re.compile(r"The `(.+?)` migration started at (.+?) UTC failed")
_APPLYING_RE = re.compile(r"^Applying migration `(.+)`$")


class CliRunner:
    """Runs the Prisma CLI (`prisma migrate ...`) as a child process and parses its output."""

    def __init__(
        self,
        command: Sequence[str],
        database_url: str,
        *,
        cwd: Path | str | None = None,
        timeout_s: float = 1800,
        env: Mapping[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.command = list(command)
        self.database_url = database_url
        self.cwd = Path(cwd) if cwd is not None else None
        self.timeout_s = timeout_s
        self.base_env = dict(env) if env is not None else dict(os.environ)  # passed through to the child
        self.on_line = on_line

    def status(self, *, on_line: Callable[[str], None] | None = None) -> CliStatus:
        """`prisma migrate status`: exit 0 only when Prisma says "Database schema is up to date!"."""
        code, output = self._run(["status"], on_line)
        pending = _list_block(_PENDING_RE, output)
        failed = _list_block(_FAILED_RE, output)
        error = _ERROR_CODE_RE.search(output)
        if error and not pending and not failed:
            raise self._error(code, output)
        up_to_date = code == 0 and "Database schema is up to date!" in output
        return CliStatus(pending=pending, failed=failed, up_to_date=up_to_date, exit_code=code, output=output)

    def deploy(self, *, on_line: Callable[[str], None] | None = None) -> DeployResult:
        """`prisma migrate deploy`; raises PrismaError (P3009, P3018, P1002, ...) when it fails."""
        marks: list[tuple[str, float]] = []

        def timed(line: str) -> None:
            match = _APPLYING_RE.match(line.strip())
            if match:
                marks.append((match.group(1), time.monotonic()))
            (on_line or self.on_line or (lambda _l: None))(line)

        code, output = self._run(["deploy"], timed)
        end = time.monotonic()
        if code != 0:
            raise self._error(code, output)
        durations = {name: (marks[i + 1][1] if i + 1 < len(marks) else end) - t for i, (name, t) in enumerate(marks)}
        return DeployResult(
            applied=[
                AppliedMigration(name=name, checksum="", duration_s=round(durations.get(name, 0.0), 3))
                for name in _APPLIED_RE.findall(output)
            ]
        )

    def resolve_rolled_back(self, name: str, *, on_line: Callable[[str], None] | None = None) -> None:
        """`prisma migrate resolve --rolled-back NAME`."""
        code, output = self._run(["resolve", "--rolled-back", name], on_line)
        if code != 0:
            raise self._error(code, output)

    def resolve_applied(self, name: str, *, on_line: Callable[[str], None] | None = None) -> None:
        """`prisma migrate resolve --applied NAME`."""
        code, output = self._run(["resolve", "--applied", name], on_line)
        if code != 0:
            raise self._error(code, output)

    def _env(self) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(
            DATABASE_URL=self.database_url,
            NO_COLOR="1",
            CI="1",
            CHECKPOINT_DISABLE="1",
            PRISMA_HIDE_UPDATE_MESSAGE="1",
        )
        env.pop("FORCE_COLOR", None)
        return env

    def _run(self, args: list[str], on_line: Callable[[str], None] | None) -> tuple[int, str]:
        """Run command + args (no shell), streaming redacted lines; kill the process group on timeout."""
        callback = on_line or self.on_line
        argv = self.command + args
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                text=True,
                encoding="utf-8",
                errors="replace",
            )
        except OSError as exc:
            raise PrismaError("CLI_NOT_FOUND", f"Could not start {' '.join(argv)}: {exc.strerror or exc}") from None
        lines: list[str] = []

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = redact(_ANSI_RE.sub("", raw.rstrip("\r\n")))
                lines.append(line)
                if callback is not None:
                    try:
                        callback(line)
                    except Exception:  # a broken callback must not hang the child on a full pipe
                        pass

        reader = threading.Thread(target=pump, name="prisma-cli-output", daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            reader.join(timeout=5)
            raise PrismaError(
                "CLI_TIMEOUT", f"`{' '.join(argv)}` did not finish within {self.timeout_s:g} s and was killed."
            ) from None
        reader.join(timeout=30)
        return code, "\n".join(lines) + "\n"

    def _error(self, code: int, output: str) -> PrismaError:
        match = _ERROR_CODE_RE.search(output)
        if match is None:
            last = next((ln for ln in reversed(output.splitlines()) if ln.strip()), "no output")
            return PrismaError("CLI_ERROR", f"prisma exited with code {code}: {last}")
        prisma_code = match.group(1)
        body = (match.group(2) + "\n" + output[match.end() :]).strip()
        name: str | None = None
        if prisma_code == "P3018":
            name_m = _MIGRATION_NAME_RE.search(output)
            db_code = _DB_ERROR_CODE_RE.search(output)
            db_error = _DB_ERROR_RE.search(output)
            name = name_m.group(1).strip() if name_m else None
            return PrismaError(
                "P3018",
                f"A migration failed to apply. Migration name: {name}. "
                f"Database error code: {db_code.group(1) if db_code else 'none'}. "
                f"Database error: {db_error.group(1).strip() if db_error else 'unknown'}",
                migration_name=name,
                prisma_message=body,
                database_error_code=db_code.group(1) if db_code and db_code.group(1) != "none" else None,
            )
        if prisma_code == "P3009":
            failed = _P3009_RE.findall(output)
            name = failed[0][0] if failed else None
            details = " ".join(f"The `{n}` migration started at {at} UTC failed" for n, at in failed)
            return PrismaError(
                "P3009",
                "migrate found failed migrations in the target database, new migrations will not be applied. "
                + details,
                migration_name=name,
                prisma_message=body,
            )
        first = next((ln.strip() for ln in body.splitlines() if ln.strip()), f"prisma exited with code {code}")
        named = re.search(r"[Mm]igration `(.+?)`", body)
        return PrismaError(prisma_code, first, migration_name=named.group(1) if named else None, prisma_message=body)


def _list_block(pattern: re.Pattern[str], output: str) -> list[str]:
    match = pattern.search(output)
    return [ln.strip() for ln in match.group(1).splitlines() if ln.strip()] if match else []


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the child's process group, give it 5 s, then SIGKILL whatever is left of the group."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
