"""Run the squawk migration linter (the squawk-cli binary) and return its JSON findings."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


CONFIG_NAME = ".squawk.toml"


@dataclass(frozen=True)
class SquawkConfig:
    """A repository's ``.squawk.toml``, as squawk reads it: the keys the review honours (others are ignored)."""

    path: Path
    excluded_rules: tuple[str, ...] = ()
    included_rules: tuple[str, ...] = ()
    excluded_paths: tuple[str, ...] = ()
    pg_version: str | None = None
    assume_in_transaction: bool | None = None
    migrations_dir: str = ""  # the migrations directory relative to the file's folder, for excluded_paths

    @property
    def pg_major(self) -> int | None:
        """The major of ``pg_version`` ("13.0" -> 13), None when unset."""
        head = (self.pg_version or "").split(".")[0]
        return int(head) if head.isdigit() else None

    def excludes(self, migration: str) -> bool:
        """True when an ``excluded_paths`` pattern matches the migration's file (or its folder name)."""
        forms = [migration, f"{migration}/migration.sql"]
        if self.migrations_dir:
            forms.append(f"{self.migrations_dir}/{migration}/migration.sql")
        return any(fnmatch.fnmatch(form, pattern) for pattern in self.excluded_paths for form in forms)

    def describe(self) -> str:
        """``squawk config: prisma/.squawk.toml (excluded rules: a, b; pg_version 13.0)``."""
        parts = []
        if self.excluded_rules:
            parts.append("excluded rules: " + ", ".join(self.excluded_rules))
        if self.included_rules:
            parts.append("included rules: " + ", ".join(self.included_rules))
        if self.excluded_paths:
            parts.append("excluded paths: " + ", ".join(self.excluded_paths))
        if self.pg_version:
            parts.append(f"pg_version {self.pg_version}")
        if self.assume_in_transaction is not None:
            parts.append("assume_in_transaction ignored: Prisma's own transaction handling decides per file")
        return f"squawk config: {self.path}" + (f" ({'; '.join(parts)})" if parts else " (nothing to apply)")


def find_squawk_config(migrations_dir: Path) -> Path | None:
    """The ``.squawk.toml`` next to the migrations, else in a folder above them up to the repository root (the
    first folder holding ``.git``); without a ``.git`` above, only the migrations folder and the current one."""
    start = migrations_dir.resolve()
    chain = [start, *start.parents]
    root = next((i for i, folder in enumerate(chain) if (folder / ".git").exists()), None)
    candidates = chain[:root + 1] if root is not None else [start, Path.cwd().resolve()]
    return next((folder / CONFIG_NAME for folder in candidates if (folder / CONFIG_NAME).is_file()), None)


def _strings(data: dict[str, Any], key: str, path: Path) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{path}: {key} must be a list of strings")
    return tuple(value)


def load_squawk_config(path: Path, migrations_dir: Path | None = None) -> SquawkConfig:
    """Read a ``.squawk.toml``; ConfigError naming the file when it is not valid TOML or a key has the wrong type."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read squawk config: {exc}") from exc
    pg_version = data.get("pg_version")
    if pg_version is not None and not isinstance(pg_version, (str, int, float)):
        raise ConfigError(f"{path}: pg_version must be a version such as \"13.0\"")
    assume = data.get("assume_in_transaction")
    if assume is not None and not isinstance(assume, bool):
        raise ConfigError(f"{path}: assume_in_transaction must be true or false")
    relative = ""
    if migrations_dir is not None:
        try:
            relative = migrations_dir.resolve().relative_to(path.parent.resolve()).as_posix()
        except ValueError:
            relative = ""
    return SquawkConfig(path=path, excluded_rules=_strings(data, "excluded_rules", path),
                        included_rules=_strings(data, "included_rules", path),
                        excluded_paths=_strings(data, "excluded_paths", path),
                        pg_version=str(pg_version) if pg_version is not None else None,
                        assume_in_transaction=assume, migrations_dir="" if relative == "." else relative)


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


def _scratch_root() -> str | None:
    """Where SquawkBatch writes its files: /dev/shm (memory) when it is there and writable, else the temp dir."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def _command(pg_version: int | None, assume_in_transaction: bool, exclude: Sequence[str],
             include: Sequence[str] = ()) -> list[str]:
    cmd = [squawk_binary(), "--reporter", "json"]
    if pg_version:
        cmd += ["--pg-version", pg_version_arg(pg_version)]
    cmd.append("--assume-in-transaction" if assume_in_transaction else "--no-assume-in-transaction")
    if exclude:
        cmd += ["--exclude", ",".join(exclude)]
    if include:
        cmd += ["--include", ",".join(include)]
    return cmd


def _violation(item: dict[str, Any]) -> SquawkViolation:
    return SquawkViolation(
        rule=item.get("rule_name", ""),
        level=item.get("level", "Warning"),
        message=item.get("message", ""),
        help=item.get("help"),
        line=int(item.get("line", 0)) + 1,
        column=int(item.get("column", 0)) + 1,
        line_end=int(item.get("line_end", item.get("line", 0))) + 1,
        column_end=int(item.get("column_end", 0)) + 1,
    )


def _report(stdout: str, returncode: int, stderr: str, what: str) -> list[dict[str, Any]]:
    out = stdout.strip()
    if not out:
        if returncode == 0:
            return []
        detail = (stderr.strip().splitlines() or ["no output"])[0]
        raise SquawkError(f"squawk failed on {what} (exit {returncode}): {detail}")
    try:
        items = json.loads(out)
    except json.JSONDecodeError as exc:
        raise SquawkError(f"squawk printed invalid JSON for {what}: {exc}") from exc
    if not isinstance(items, list):
        raise SquawkError(f"squawk printed unexpected JSON for {what}")
    return items


def run_squawk(
    sql: str,
    *,
    filename: str = "migration.sql",
    pg_version: int | None = None,
    assume_in_transaction: bool = True,
    exclude: Sequence[str] = (),
    include: Sequence[str] = (),
    timeout: float = 60.0,
) -> list[SquawkViolation]:
    """Lint one SQL text with ``--reporter json`` and return the violations (empty list when clean).

    squawk runs in an empty directory so a stray .squawk.toml cannot change the rules; the repository's own
    .squawk.toml is read by the review (SquawkConfig) and passed as flags.
    """
    cmd = [*_command(pg_version, assume_in_transaction, exclude, include), "--stdin-filepath", filename]
    with tempfile.TemporaryDirectory(prefix="squawk-") as cwd:
        try:
            proc = subprocess.run(cmd, input=sql, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise SquawkError(f"squawk timed out after {timeout:.0f}s on {filename}") from exc
        except OSError as exc:
            raise SquawkError(f"could not run squawk: {exc}") from exc
    return [_violation(item) for item in _report(proc.stdout, proc.returncode, proc.stderr, filename)]


class SquawkBatch:
    """One squawk process linting many SQL texts with one set of flags, started at once and read later.

    Each text is written to its own file (``00000.sql``, ``00001.sql``, … by position) in a private temporary
    directory (on /dev/shm when there is one), which is also squawk's working directory (no stray .squawk.toml);
    squawk names the file of each violation in its JSON, so ``results()`` maps them back: one list per text, in
    the order given, each list in squawk's order. One process instead of one per file: a review of 400 files
    starts 1-2 processes, not 400.
    If the batch run fails, ``results()`` lints the texts one by one so the error names the file at fault.
    """

    def __init__(
        self,
        sqls: Sequence[str],
        *,
        names: Sequence[str] | None = None,
        pg_version: int | None = None,
        assume_in_transaction: bool = True,
        exclude: Sequence[str] = (),
        include: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> None:
        self.sqls = list(sqls)
        self.names = list(names) if names is not None else [f"migration {i + 1}" for i in range(len(self.sqls))]
        self.pg_version, self.assume_in_transaction, self.exclude = pg_version, assume_in_transaction, tuple(exclude)
        self.include = tuple(include)
        self.timeout = timeout
        self.files = [f"{i:05d}.sql" for i in range(len(self.sqls))]
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._results: list[list[SquawkViolation]] | None = None
        if not self.sqls:
            self._results = []
            return
        cmd = _command(pg_version, assume_in_transaction, exclude, include)  # raises SquawkNotFound before any work
        self._dir = tempfile.TemporaryDirectory(prefix="squawk-", dir=_scratch_root())
        self._start_error: OSError | UnicodeError | None = None
        # Written here, before the caller's own work, not on a helper thread: the caller's analysis holds the GIL,
        # and a writer thread then gets a slice every 5 ms (measured: 0.14 s for 400 files on a thread against
        # 7 ms up front on tmpfs). Once started, squawk lints while the caller works.
        try:
            folder = self._dir.name
            for file, sql in zip(self.files, self.sqls, strict=True):
                with open(os.path.join(folder, file), "w", encoding="utf-8") as handle:
                    handle.write(sql)
            # Output goes to files, not pipes: squawk never blocks on a full pipe while we are busy elsewhere.
            with open(os.path.join(folder, "report.json"), "wb") as out, \
                    open(os.path.join(folder, "stderr.txt"), "wb") as err:
                self._started = time.monotonic()
                self._proc = subprocess.Popen([*cmd, *self.files], cwd=folder, stdin=subprocess.DEVNULL,
                                              stdout=out, stderr=err)
        except (OSError, UnicodeError) as exc:  # reported by results(), like any other squawk failure
            self._start_error = exc

    def results(self) -> list[list[SquawkViolation]]:
        """Wait for squawk; the violations of each text, in the order the texts were given."""
        if self._results is not None:
            return self._results
        try:
            if self._start_error is not None:
                raise SquawkError(f"could not run squawk: {self._start_error}") from self._start_error
            assert self._proc is not None
            remaining = max(self.timeout - (time.monotonic() - self._started), 0.1)
            try:
                self._proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired as exc:
                raise SquawkError(f"squawk timed out after {self.timeout:.0f}s on {len(self.sqls)} files") from exc
            assert self._dir is not None
            folder = Path(self._dir.name)
            stdout = (folder / "report.json").read_text(encoding="utf-8", errors="replace")
            stderr = (folder / "stderr.txt").read_text(encoding="utf-8", errors="replace")
            try:
                items = _report(stdout, self._proc.returncode, stderr, f"{len(self.sqls)} files")
                by_file: dict[str, list[SquawkViolation]] = {f: [] for f in self.files}
                for item in items:
                    file = os.path.basename(str(item.get("file", "")))
                    if file not in by_file:
                        raise SquawkError(f"squawk reported a file it was not given: {file!r}")
                    by_file[file].append(_violation(item))
                self._results = [by_file[f] for f in self.files]
            except SquawkError:
                # Find (and name) the file squawk fails on, or get the results after all.
                self._results = [run_squawk(sql, filename=name, pg_version=self.pg_version,
                                            assume_in_transaction=self.assume_in_transaction,
                                            exclude=self.exclude, include=self.include, timeout=self.timeout)
                                 for name, sql in zip(self.names, self.sqls, strict=True)]
            return self._results
        finally:
            self.close()

    def close(self) -> None:
        """Stop squawk if it still runs and remove the temporary files (idempotent)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> SquawkBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
