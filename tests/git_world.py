"""A release repository for the tests: a bare repo made with the real `git`, served over file:// and over git's smart
HTTP (`git http-backend` behind a small local server that requires a token by Basic auth)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}


def git(cwd: Path, *args: str, author: str = "Dana Dev") -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **GIT_ENV,
           "GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": "dev@example.com",
           "GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": "dev@example.com"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


class ReleaseRepo:
    """A working clone where the test commits, and the bare repository the bot fetches from."""

    def __init__(self, root: Path, path: str = "prisma/migrations") -> None:
        self.root = root
        self.bare = root / "api.git"
        self.work = root / "work"
        self.path = path
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "--quiet", "--bare", "-b", "main", str(self.bare))
        git(self.bare, "config", "uploadpack.allowFilter", "true")
        git(self.bare, "config", "uploadpack.allowAnySHA1InWant", "true")
        git(self.bare, "config", "http.receivepack", "false")
        git(root, "init", "--quiet", "-b", "main", str(self.work))
        git(self.work, "remote", "add", "origin", str(self.bare))

    @property
    def file_url(self) -> str:
        return self.bare.as_uri()

    def commit(self, message: str, files: dict[str, str | None], *, author: str = "Dana Dev",
               branch: str = "main") -> str:
        """Write (or with None delete) ``files`` under the working clone, commit, push ``branch``; the new SHA."""
        for name, text in files.items():
            target = self.work / name
            if text is None:
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "--quiet", "--allow-empty", "-m", message, author=author)
        git(self.work, "push", "--quiet", "--force", "origin", f"HEAD:refs/heads/{branch}")
        return git(self.work, "rev-parse", "HEAD")

    def checkout(self, ref: str) -> None:
        git(self.work, "checkout", "--quiet", ref)

    def tag(self, name: str, sha: str) -> None:
        git(self.work, "tag", "--force", name, sha)
        git(self.work, "push", "--quiet", "--force", "origin", f"refs/tags/{name}")

    def delete_branch(self, branch: str) -> None:
        git(self.work, "push", "--quiet", "origin", f":refs/heads/{branch}")
        git(self.bare, "reflog", "expire", "--expire=now", "--all")
        git(self.bare, "gc", "--quiet", "--prune=now")


class GitHttpServer:
    """`git http-backend` behind ThreadingHTTPServer: every request needs Basic auth with one of the tokens as password."""

    def __init__(self, project_root: Path, *tokens: str) -> None:
        self.project_root = project_root
        self.tokens = set(tokens)
        self.requests: list[str] = []
        self.refused = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self._backend()

            def do_POST(self) -> None:
                self._backend()

            def _backend(self) -> None:
                server.requests.append(self.path)
                header = self.headers.get("Authorization", "")
                given = ""
                if header.startswith("Basic "):
                    given = base64.b64decode(header[6:]).decode(errors="replace").partition(":")[2]
                if given not in server.tokens:
                    server.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                env = {"PATH": os.environ.get("PATH", ""), "GIT_PROJECT_ROOT": str(server.project_root),
                       "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command, "PATH_INFO": path,
                       "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                       "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": "bot", "REMOTE_ADDR": "127.0.0.1",
                       "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                       "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                       "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
                done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60)
                head, _, payload = done.stdout.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.decode(errors="replace").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> GitHttpServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, name: str, *, credentials: str = "") -> str:
        host = self.base_url.removeprefix("http://")
        return f"http://{credentials + '@' if credentials else ''}{host}/{name}"
