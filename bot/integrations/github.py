"""GitHub's REST API (httpx): which merged pull request added a file at a commit, and who approved it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from bot.errors import IntegrationError
from bot.integrations.http import describe_http_error, new_client
from bot.redact import redact, register_secret

MAX_PAGES = 10
"""Pages of 100 followed per listing: far more commits, pulls or reviews than one migration file has."""
MAX_COMMITS_PER_FILE = 5
"""Commits touching one migration file that are checked; more than this is itself worth a human's look."""


class GithubError(IntegrationError):
    """GitHub could not answer: the token, the repository, the rate limit or the network (one line, no token)."""


@dataclass
class FileReview:
    """The evidence for one migration file: the pull requests that brought it in, and who approved them."""

    path: str
    pulls: list[int] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)
    approvers: list[str] = field(default_factory=list)
    problem: str | None = None
    """Why this file lacks an independent approval (None: it has one)."""


class GitHub:
    """A read-only client for one repository: commits of a path, the pulls of a commit, the reviews of a pull."""

    def __init__(self, *, repo: str, api_url: str = "https://api.github.com", token: str | None = None,
                 timeout_s: float = 10, token_name: str | None = None) -> None:
        register_secret(token)
        self.repo = repo
        self.api_url = api_url.rstrip("/")
        self.timeout_s = timeout_s
        self.token_name = token_name
        self._headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._client = new_client(timeout_s=timeout_s)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GitHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ---------------------------------------------------------------------------------------------

    def _get(self, url: str, params: dict[str, str] | None = None) -> httpx.Response:
        try:
            response = self._client.get(url, params=params, headers=self._headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise GithubError(f"GitHub unreachable at {redact(self.api_url)}: "
                              f"{describe_http_error(exc, timeout_s=self.timeout_s)}") from exc
        if response.status_code >= 400:
            raise GithubError(self._refusal(response))
        return response

    def _refusal(self, response: httpx.Response) -> str:
        """One line for an error answer: which, and what to do about it."""
        status, headers = response.status_code, response.headers
        token = f" (check the token in {self.token_name})" if self.token_name else ""
        if status == 429 or (status == 403 and (headers.get("x-ratelimit-remaining") == "0"
                                                or "retry-after" in headers)):
            return f"GitHub's rate limit is reached; {_reset_text(headers)}"
        if status == 401:
            return f"GitHub refused the token (401){token}"
        if status == 403:
            return (f"GitHub denied access to {self.repo} (403): the token needs read access to its contents and "
                    f"pull requests{token}")
        if status == 404:
            return f"GitHub has no {self.repo}, or the token cannot see it (404){token}"
        return f"GitHub answered {status} for {self.repo}"

    def _list(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every item of a paginated listing (following ``Link: rel="next"`` on GitHub's own host only)."""
        url: str | None = f"{self.api_url}{path}"
        query: dict[str, str] | None = {**(params or {}), "per_page": "100"}
        items: list[dict[str, Any]] = []
        host = urlsplit(self.api_url).netloc
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = self._get(url, query)
            body = _json(response)
            if not isinstance(body, list):
                raise GithubError(f"GitHub answered {path} with something other than a list")
            items.extend(item for item in body if isinstance(item, dict))
            following = response.links.get("next", {}).get("url")
            url = following if following and urlsplit(following).netloc == host else None
            query = None  # the next link carries its own query
        return items

    # -- the questions ----------------------------------------------------------------------------------------

    def commits_touching(self, path: str, sha: str) -> list[str]:
        """SHAs of the commits reachable from ``sha`` that changed ``path``, oldest first (the first added it)."""
        commits = self._list(f"/repos/{self.repo}/commits", {"path": path, "sha": sha})
        return [str(c.get("sha")) for c in reversed(commits) if c.get("sha")]

    def pulls_of(self, commit: str) -> list[dict[str, Any]]:
        return self._list(f"/repos/{self.repo}/commits/{quote(commit, safe='')}/pulls")

    def reviews(self, number: int) -> list[dict[str, Any]]:
        return self._list(f"/repos/{self.repo}/pulls/{number}/reviews")

    def review_of(self, path: str, sha: str) -> FileReview:
        """Whether every commit that changed ``path`` up to ``sha`` came in by a merged pull request approved by
        someone other than its author (each reviewer's latest approving or blocking review counts)."""
        found = FileReview(path=path)
        commits = self.commits_touching(path, sha)
        if not commits:
            found.problem = f"`{path}` is not in any commit reachable from {sha[:7]}"
            return found
        if len(commits) > MAX_COMMITS_PER_FILE:
            found.problem = f"`{path}` was changed by {len(commits)} commits; check its history by hand"
            return found
        for commit in commits:
            pulls = self.pulls_of(commit)
            merged = [p for p in pulls if p.get("merged_at")]
            if not merged:
                found.problem = (f"`{path}`: pull request #{pulls[0].get('number')} that brought in {commit[:7]} is "
                                 "not merged" if pulls else
                                 f"`{path}`: commit {commit[:7]} came in without a pull request")
                return found
            pull = merged[0]
            number = int(pull.get("number") or 0)
            author = str((pull.get("user") or {}).get("login") or "")
            approvers = independent_approvers(self.reviews(number), author)
            found.pulls.append(number)
            found.authors.append(author)
            if not approvers:
                found.problem = (f"`{path}`: pull request #{number} has no approving review by someone other than "
                                 f"its author {author}")
                return found
            found.approvers.extend(a for a in approvers if a not in found.approvers)
        return found


def independent_approvers(reviews: list[dict[str, Any]], author: str) -> list[str]:
    """Reviewers other than ``author`` whose latest deciding review (approve, request changes, dismissed) approves;
    a later comment-only review does not undo an approval, as on GitHub."""
    latest: dict[str, str] = {}
    for review in sorted(reviews, key=lambda r: (str(r.get("submitted_at") or ""), int(r.get("id") or 0))):
        login = str((review.get("user") or {}).get("login") or "")
        state = str(review.get("state") or "").upper()
        if login and state in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
            latest[login] = state
    return sorted(login for login, state in latest.items() if state == "APPROVED" and login.lower() != author.lower())


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise GithubError(f"GitHub answered {response.url.path} with something other than JSON") from exc


def _reset_text(headers: httpx.Headers) -> str:
    """When to try again, from Retry-After or X-RateLimit-Reset."""
    retry = headers.get("retry-after", "")
    if retry.isdigit():
        return f"try again in {int(retry)} s"
    reset = headers.get("x-ratelimit-reset", "")
    if reset.isdigit():
        return "it resets at " + datetime.fromtimestamp(int(reset), UTC).strftime("%H:%M UTC")
    return "try again later"
