"""The git client: fetch a release's repository into a cache with the real `git`, resolve refs, read a commit's files.

A token (from the environment, or written into the URL) reaches git only through the child's environment
(``GIT_CONFIG_*``, an ``http.extraHeader``): never argv, never ``.git/config``, never a log line.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from bot.config import valid_ref
from bot.errors import IntegrationError
from bot.redact import redact, register_secret

log = logging.getLogger(__name__)

_SHA = re.compile(r"^[0-9a-f]{40}$")
_SHORT_SHA = re.compile(r"^[0-9a-f]{7,40}$")


class GitError(IntegrationError):
    """git could not fetch or read what a run needs; the message says what to do."""


@dataclass(frozen=True)
class Commit:
    """One resolved commit: its full SHA, subject and author."""

    sha: str
    subject: str
    author: str


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its user:password part, the user and the password (a token someone wrote into the URL)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), unquote(user) or None, \
        unquote(password) or None


class GitSource:
    """One repository: a bare partial clone (commits and trees, blobs on demand) in ``cache_dir``."""

    def __init__(self, url: str, *, path: str, cache_dir: Path | str, token: str | None = None,
                 timeout_s: float = 120) -> None:
        self.url, user, password = split_credentials(url)
        self.token = token or password
        self.user = user or "x-access-token"
        register_secret(password)
        register_secret(token)
        self.path = path.strip("/")
        self.timeout_s = timeout_s
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.root = Path(cache_dir) / digest
        self.git_dir = self.root / "repo.git"

    # ---- running git --------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="/bin/false", SSH_ASKPASS="/bin/false",
                   GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_DIR=str(self.git_dir),
                   GIT_SSH_COMMAND="ssh -o BatchMode=yes -o ConnectTimeout=15", LC_ALL="C")
        settings = [("credential.helper", ""), ("protocol.version", "2")]
        if self.token:
            basic = base64.b64encode(f"{self.user}:{self.token}".encode()).decode()
            register_secret(basic)
            settings.append(("http.extraHeader", f"Authorization: Basic {basic}"))
        env["GIT_CONFIG_COUNT"] = str(len(settings))
        for number, (key, value) in enumerate(settings):
            env[f"GIT_CONFIG_KEY_{number}"] = key
            env[f"GIT_CONFIG_VALUE_{number}"] = value
        return env

    def _scrub(self, text: str) -> str:
        return redact(text.replace(self.token, "***") if self.token else text)

    def _git(self, *args: str, check: bool = True, timeout_s: float | None = None) -> subprocess.CompletedProcess[bytes]:
        try:
            done = subprocess.run(["git", *args], env=self._env(), capture_output=True, stdin=subprocess.DEVNULL,
                                  timeout=timeout_s or self.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise GitError(f"git did not answer within {int(timeout_s or self.timeout_s)} s fetching from "
                           f"{self.url}: check the remote is reachable, or raise migrate.source.git.timeout_s.") \
                from None
        except OSError as exc:
            raise GitError(f"git could not be started ({exc.strerror}): install git in the bot's image.") from None
        if check and done.returncode != 0:
            raise GitError(self._explain(args[0], done.stderr.decode(errors="replace")))
        return done

    def _explain(self, verb: str, stderr: str) -> str:
        """git's failure as one line that says what to do; the detail scrubbed of any secret."""
        text = self._scrub(stderr)
        lower = text.lower()
        detail = " ".join(line.strip() for line in text.splitlines() if line.strip()
                          and not line.startswith(("hint:", "warning:")))[:200]
        if any(s in lower for s in ("authentication failed", "could not read username", "could not read password",
                                    "401", "403", "permission denied", "access denied", "terminal prompts disabled")):
            return (f"The git remote {self.url} refused the credentials (no access to the repository): check the "
                    "token named by migrate.source.git.token_env can read it.")
        if any(s in lower for s in ("could not resolve host", "connection refused", "failed to connect",
                                    "does not appear to be a git repository", "repository not found", "not found",
                                    "unable to access", "could not read from remote", "timed out")):
            return (f"The git remote {self.url} could not be reached ({detail}): check migrate.source.git.url "
                    "and the network, then try again.")
        return f"git {verb} failed: {detail}"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer per cache across threads and processes (two fetches would fight over the same refs)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _init(self) -> None:
        if (self.git_dir / "HEAD").exists():
            return
        tmp = Path(tempfile.mkdtemp(prefix="init-", dir=self.root))
        env = self._env()
        env["GIT_DIR"] = str(tmp)
        for args in (["init", "--bare", "--quiet"],
                     ["config", "remote.origin.url", self.url],  # the URL without credentials
                     ["config", "remote.origin.promisor", "true"],
                     ["config", "remote.origin.partialclonefilter", "blob:none"],
                     ["config", "core.repositoryformatversion", "1"],
                     ["config", "extensions.partialclone", "origin"]):
            subprocess.run(["git", *args], env=env, capture_output=True, check=True, timeout=30)
        tmp.rename(self.git_dir)

    # ---- what a run asks -----------------------------------------------------------------------------
    def fetch(self) -> None:
        """Bring every branch and tag of the remote into the cache (commits and trees; blobs when read)."""
        with self._locked():
            self._init()
            self._git("fetch", "--quiet", "--prune", "--prune-tags", "--force", "--filter=blob:none", "origin",
                      "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")

    def _rev(self, name: str) -> str | None:
        done = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}", check=False)
        sha = done.stdout.decode().strip()
        return sha if done.returncode == 0 and _SHA.match(sha) else None

    def resolve(self, ref: str) -> Commit:
        """Fetch, then the commit ``ref`` (a tag, branch or SHA) names on the remote right now."""
        if not valid_ref(ref):
            raise GitError(f"`{ref[:60]}` is not a tag, branch or commit SHA: give one, e.g. `v1.4.2` or `main`.")
        self.fetch()
        sha = self._rev(f"refs/tags/{ref}") or self._rev(f"refs/remotes/origin/{ref}")
        if sha is None and _SHORT_SHA.match(ref):
            sha = self._rev(ref)
            if sha is not None and not self._published(sha):
                raise GitError(f"Commit `{ref[:12]}` is no longer on any branch or tag of {self.url} (force-pushed "
                               "away?): start the run from a tag, branch or SHA the remote still has.")
        if sha is None:
            raise GitError(f"No tag, branch or commit `{ref[:60]}` in {self.url}: check the name (`git ls-remote` "
                           "lists them), push it, then try again.")
        return self.commit(sha)

    def _published(self, sha: str) -> bool:
        done = self._git("for-each-ref", "--count=1", f"--contains={sha}", "--format=%(refname)",
                         "refs/remotes/origin", "refs/tags", check=False)
        return done.returncode == 0 and bool(done.stdout.strip())

    def commit(self, sha: str) -> Commit:
        self._have(sha)
        out = self._git("log", "-1", "--format=%H%x00%s%x00%an", sha, "--").stdout.decode(errors="replace")
        full, subject, author = (out.strip().split("\x00") + ["", ""])[:3]
        return Commit(sha=full, subject=subject, author=author)

    def _have(self, sha: str) -> None:
        """``sha`` in the cache: fetched from the remote again if the cache lost it (a new container)."""
        if not _SHA.match(sha):
            raise GitError(f"`{sha[:60]}` is not a full commit SHA.")
        if self._rev(sha) is not None:
            return
        self.fetch()
        if self._rev(sha) is None or not self._published(sha):
            raise GitError(f"Commit {sha[:7]} is no longer on any branch or tag of {self.url} (force-pushed "
                           "away?): this run cannot read its migrations; cancel it and start a new one.")

    def has_path(self, sha: str) -> bool:
        done = self._git("cat-file", "-t", f"{sha}:{self.path}", check=False)
        return done.returncode == 0 and done.stdout.strip() == b"tree"

    def tree(self, sha: str, *, extra: tuple[str, ...] = ()) -> Path:
        """A directory holding ``path`` (and ``extra`` paths) exactly as at ``sha``; made once per commit.

        Keyed by the SHA, it never changes: a crash while extracting leaves only a temporary directory behind. Its
        root holds an empty ``.git``, so a lookup that climbs to the repository root (squawk's config) stops there.
        """
        suffix = hashlib.sha256("\n".join((self.path, *extra)).encode()).hexdigest()[:8]
        target = self.root / "trees" / f"{sha}-{suffix}"
        if target.is_dir():
            return target
        self._have(sha)
        if not self.has_path(sha):
            raise GitError(f"Commit {sha[:7]} has no folder `{self.path}`: check migrate.source.git.path, or "
                           "start the run from a commit that has the migrations.")
        paths = [self.path, *[p for p in extra if p and self._exists(sha, p)]]
        archive = self._git("archive", "--format=tar", sha, "--", *paths, timeout_s=self.timeout_s).stdout
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{sha[:7]}-", dir=target.parent))
        try:
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(staging, filter="data")
            (staging / ".git").mkdir(exist_ok=True)
            staging.rename(target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not target.is_dir():  # another process extracted it first: theirs is the same commit
                raise
        return target

    def _exists(self, sha: str, path: str) -> bool:
        return self._git("cat-file", "-e", f"{sha}:{path.strip('/')}", check=False).returncode == 0

    def commits_between(self, base: str, sha: str) -> int | None:
        """How many commits ``sha`` has that ``base`` has not; None when the history does not say."""
        if not (_SHA.match(base) and _SHA.match(sha)) or self._rev(base) is None or self._rev(sha) is None:
            return None
        done = self._git("rev-list", "--count", f"{base}..{sha}", "--", check=False)
        text = done.stdout.decode().strip()
        return int(text) if done.returncode == 0 and text.isdigit() else None
