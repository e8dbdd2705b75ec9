"""A tiny stand-in for the MyChristianCounselor API (health, auth, counsel, maintenance) for tests and demos.

Routes (the seed's "6. Smoke Test Critical Paths" and "2. Enable Maintenance Mode"):

    GET  /health             200 {"status": "ok", "version": ...}
    POST /auth/register      {"email", "password"} -> 201 {"id", "email"}; 409 if the email is taken
    POST /auth/login         {"email", "password"} -> 200 {"token", "userId"}; 401 on bad credentials
    POST /counsel            Authorization: Bearer <token>, {"message"} -> 201 {"reply", "sessionId"}; 401 without
    POST /admin/maintenance  X-Maintenance-Token: <secret>, {"enabled": bool} -> 200 {"maintenance": bool}; 403

While maintenance mode is on, every route except /admin/maintenance answers 503 with an HTML
"Service Temporarily Unavailable" page and ``Retry-After`` — except for requests that carry the valid
``X-Maintenance-Token`` (the operators' bypass, so the runbook's smoke tests can run before step 8 reopens
the app; real deployments do the same with an allow-listed header or IP at the load balancer).

Users live in memory, or — with ``database_url`` — in the Prisma-style table ``"User"`` of that PostgreSQL
database (see ``USER_TABLE_SQL``), so a migration that breaks or creates that table changes what the smoke
tests see. The app never creates the table unless ``create_schema=True`` (``--create-schema``): in a demo the
migration is what creates it. Login tokens are kept in process memory either way.

Run it standalone with ``python -m bot.devtools.demoapp --port 8080 [--database-url URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import secrets
import socket
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAINTENANCE_PATH = "/admin/maintenance"
MAINTENANCE_TOKEN_HEADER = "X-Maintenance-Token"

# The table Prisma would create for `model User { id String @id; email String @unique; passwordHash String;
# createdAt DateTime @default(now()) }`. Demo migrations can use this statement verbatim.
USER_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS "User" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "email" TEXT NOT NULL UNIQUE,
    "passwordHash" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""

MAINTENANCE_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Service Temporarily Unavailable</title></head>
<body style="font-family: sans-serif; text-align: center; padding-top: 10%">
<h1>Service Temporarily Unavailable</h1>
<p>MyChristianCounselor is down for scheduled maintenance. Please try again in a few minutes.</p>
</body>
</html>
"""

_PBKDF2_ROUNDS = 20_000  # a demo: slow enough to be a real hash, fast enough for tests


@dataclass(frozen=True)
class SeenRequest:
    """One request the app answered, as the tests want to inspect it."""

    method: str
    path: str
    status: int
    authorization: str | None


@dataclass
class DemoState:
    """Everything the app knows; tests may change the knobs while it runs."""

    version: str = "1.0.0"
    maintenance: bool = False
    maintenance_token: str | None = None
    fail_path: str | None = None
    slow_path: str | None = None
    delay_s: float = 0.0
    database_url: str | None = None
    users: dict[str, tuple[str, str]] = field(default_factory=dict)  # email -> (id, password hash)
    tokens: dict[str, str] = field(default_factory=dict)  # bearer token -> user id
    seen: list[SeenRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bearers_seen(self, path: str | None = None) -> list[str]:
        """The bearer tokens sent to ``path`` (every path if None), in order."""
        return [r.authorization.split(" ", 1)[1] for r in list(self.seen)
                if r.authorization and r.authorization.lower().startswith("bearer ") and path in (None, r.path)]


class _UserStore:
    """Users in memory, or in the "User" table of a PostgreSQL database (one short connection per call)."""

    def __init__(self, state: DemoState) -> None:
        self.state = state

    def create(self, email: str, password_hash: str) -> str | None:
        """Insert a user; return its id, or None if the email is already registered."""
        user_id = f"usr_{uuid.uuid4().hex[:16]}"
        if not self.state.database_url:
            with self.state.lock:
                if email in self.state.users:
                    return None
                self.state.users[email] = (user_id, password_hash)
            return user_id
        import psycopg

        with psycopg.connect(self.state.database_url, connect_timeout=5, autocommit=True) as conn:
            row = conn.execute(
                'INSERT INTO "User" ("id", "email", "passwordHash") VALUES (%s, %s, %s) '
                'ON CONFLICT ("email") DO NOTHING RETURNING "id"',
                (user_id, email, password_hash),
            ).fetchone()
        return str(row[0]) if row else None

    def find(self, email: str) -> tuple[str, str] | None:
        """(id, password hash) of the user with that email, if any."""
        if not self.state.database_url:
            with self.state.lock:
                return self.state.users.get(email)
        import psycopg

        with psycopg.connect(self.state.database_url, connect_timeout=5, autocommit=True) as conn:
            row = conn.execute('SELECT "id", "passwordHash" FROM "User" WHERE "email" = %s', (email,)).fetchone()
        return (str(row[0]), str(row[1])) if row else None


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A salted PBKDF2-SHA256 hash, stored as ``salt$digest`` in hex."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _PBKDF2_ROUNDS)
    return f"{salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by ``hash_password``."""
    salt_hex, _, _ = stored.partition("$")
    try:
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    return hmac.compare_digest(hash_password(password, salt), stored)


async def _json_body(request: Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _credentials(body: dict[str, Any] | None) -> tuple[str, str] | None:
    if not body:
        return None
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or "@" not in email or not isinstance(password, str) or not password:
        return None
    return email.strip().lower(), password


def _token_ok(state: DemoState, given: str) -> bool:
    """Whether ``given`` is the configured maintenance secret (never true when none is configured)."""
    expected = state.maintenance_token
    return bool(expected) and hmac.compare_digest(given.encode(), str(expected).encode())


def _storage_error(exc: Exception) -> Response:
    """A 500 naming the database problem in one redacted line (e.g. the "User" table is missing)."""
    from bot.redact import redact

    detail = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return JSONResponse({"error": "database error", "detail": detail}, status_code=500)


def build_app(state: DemoState) -> ASGIApp:
    """The ASGI app: Starlette routes wrapped in the maintenance / failure-injection / request-log layer."""
    store = _UserStore(state)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": state.version})

    async def register(request: Request) -> Response:
        creds = _credentials(await _json_body(request))
        if creds is None:
            return JSONResponse({"error": "email and password are required"}, status_code=400)
        email, password = creds
        try:
            user_id = await asyncio.to_thread(store.create, email, hash_password(password))
        except Exception as exc:  # noqa: BLE001 - the demo reports any storage failure as a 500
            return _storage_error(exc)
        if user_id is None:
            return JSONResponse({"error": "email already registered"}, status_code=409)
        return JSONResponse({"id": user_id, "email": email}, status_code=201)

    async def login(request: Request) -> Response:
        creds = _credentials(await _json_body(request))
        if creds is None:
            return JSONResponse({"error": "email and password are required"}, status_code=400)
        email, password = creds
        try:
            found = await asyncio.to_thread(store.find, email)
        except Exception as exc:  # noqa: BLE001 - the demo reports any storage failure as a 500
            return _storage_error(exc)
        if found is None or not verify_password(password, found[1]):
            return JSONResponse({"error": "invalid credentials"}, status_code=401)
        token = secrets.token_urlsafe(24)
        with state.lock:
            state.tokens[token] = found[0]
        return JSONResponse({"token": token, "userId": found[0]})

    async def counsel(request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with state.lock:
            user_id = state.tokens.get(token) if scheme.lower() == "bearer" else None
        if user_id is None:
            return JSONResponse({"error": "missing or invalid bearer token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        body = await _json_body(request) or {}
        message = body.get("message")
        if not isinstance(message, str) or not message.strip():
            return JSONResponse({"error": "message is required"}, status_code=400)
        reply = f"Thank you for sharing. You wrote {len(message.split())} word(s); let us reflect on them together."
        return JSONResponse({"reply": reply, "sessionId": f"ses_{uuid.uuid4().hex[:12]}", "userId": user_id},
                            status_code=201)

    async def maintenance(request: Request) -> Response:
        if not _token_ok(state, request.headers.get(MAINTENANCE_TOKEN_HEADER, "")):
            return JSONResponse({"error": "forbidden"}, status_code=403)
        body = await _json_body(request)
        if body is None or not isinstance(body.get("enabled"), bool):
            return JSONResponse({"error": 'expected {"enabled": true|false}'}, status_code=400)
        state.maintenance = body["enabled"]
        return JSONResponse({"maintenance": state.maintenance})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/auth/register", register, methods=["POST"]),
        Route("/auth/login", login, methods=["POST"]),
        Route("/counsel", counsel, methods=["POST"]),
        Route(MAINTENANCE_PATH, maintenance, methods=["POST"]),
    ]
    return _Knobs(Starlette(routes=routes), state)


class _Knobs:
    """ASGI wrapper: maintenance page, injected failures and delays, and the request log."""

    def __init__(self, app: ASGIApp, state: DemoState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state, path = self.state, scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":  # logged before the client can see the answer
                with state.lock:
                    state.seen.append(SeenRequest(scope["method"], path, int(message["status"]),
                                                  headers.get("authorization")))
            await send(message)

        if state.slow_path == path and state.delay_s > 0:
            await asyncio.sleep(state.delay_s)
        response: Response | None = None
        if state.maintenance and path != MAINTENANCE_PATH and not _token_ok(
                state, headers.get(MAINTENANCE_TOKEN_HEADER.lower(), "")):
            response = HTMLResponse(MAINTENANCE_PAGE, status_code=503, headers={"Retry-After": "300"})
        elif state.fail_path == path:
            response = JSONResponse({"error": "injected failure"}, status_code=500)
        if response is not None:
            await response(scope, receive, recording_send)
        else:
            await self.app(scope, receive, recording_send)


class _WakeableServer(uvicorn.Server):
    """uvicorn's server whose idle loop can be woken from another thread, so stop() takes ~0.1 s, not ~0.2 s."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):  # on_tick keeps the Date header fresh and reads should_exit
            counter = (counter + 1) % 864000
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.1)
            except TimeoutError:
                pass

    def request_exit(self) -> None:
        """Ask the server to shut down now (thread-safe)."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop closed in between
                pass


class DemoApp:
    """Serve the demo app with uvicorn on 127.0.0.1 in a background thread.

        with DemoApp(version="2.0.0", maintenance_token="s3cret") as app:
            httpx.get(app.base_url + "/health")
    """

    def __init__(self, *, port: int = 0, version: str = "1.0.0", database_url: str | None = None,
                 maintenance_token: str | None = None, maintenance: bool = False,
                 fail_path: str | None = None, slow_path: str | None = None, delay_s: float = 0.0,
                 create_schema: bool = False) -> None:
        self.state = DemoState(version=version, maintenance=maintenance, maintenance_token=maintenance_token,
                               fail_path=fail_path, slow_path=slow_path, delay_s=delay_s,
                               database_url=database_url)
        self.create_schema = create_schema
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._server: _WakeableServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` once started."""
        if not self.port:
            raise RuntimeError("DemoApp is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def maintenance(self) -> bool:
        """Whether the maintenance page is on."""
        return self.state.maintenance

    def reset(self, *, version: str | None = None) -> None:
        """Forget in-memory users, tokens and the request log, and clear every knob (maintenance off).

        Users stored in a database stay there. Lets one running app serve many tests.
        """
        state = self.state
        with state.lock:
            state.users.clear()
            state.tokens.clear()
            state.seen.clear()
        state.maintenance, state.fail_path, state.slow_path, state.delay_s = False, None, None, 0.0
        if version is not None:
            state.version = version

    def start(self, timeout_s: float = 10) -> Self:
        """Bind the port, start serving, and return once the server accepts connections."""
        if self._thread is not None:
            return self
        if self.create_schema and self.state.database_url:
            import psycopg

            with psycopg.connect(self.state.database_url, connect_timeout=5, autocommit=True) as conn:
                conn.execute(USER_TABLE_SQL)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this; without it, split response writes meet delayed ACKs (~40 ms each).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", self._requested_port))
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(build_app(self.state), log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        self._server = _WakeableServer(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"demoapp-{self.port}", daemon=True)
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout_s / 0.01)):
            if self._server.started:
                return self
            if not self._thread.is_alive():
                break
            deadline.wait(0.01)
        self.stop()
        raise RuntimeError("demo app did not start")

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.request_exit()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()
        self._server, self._thread, self._socket = None, None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m bot.devtools.demoapp``: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m bot.devtools.demoapp", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--database-url", default=None, help='keep users in the "User" table of this database')
    parser.add_argument("--create-schema", action="store_true", help='create the "User" table if missing')
    parser.add_argument("--version", dest="app_version", default="1.0.0", help="version reported by /health")
    parser.add_argument("--maintenance-token", default=os.environ.get("DEMO_MAINTENANCE_TOKEN", "demo-maintenance"),
                        help="secret for X-Maintenance-Token (default: $DEMO_MAINTENANCE_TOKEN or demo-maintenance)")
    parser.add_argument("--maintenance", action="store_true",
                        default=os.environ.get("MAINTENANCE_MODE", "").lower() in ("1", "true", "yes"),
                        help="start in maintenance mode (also MAINTENANCE_MODE=true)")
    parser.add_argument("--fail-path", default=None, help="answer 500 on this path")
    args = parser.parse_args(argv)
    app = DemoApp(port=args.port, version=args.app_version, database_url=args.database_url,
                  maintenance_token=args.maintenance_token, maintenance=args.maintenance,
                  fail_path=args.fail_path, create_schema=args.create_schema)
    try:
        app.start()
    except Exception as exc:  # one line, never a DSN in a traceback
        from bot.redact import redact

        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"demoapp: cannot start: {type(exc).__name__}: {redact(first)}", file=sys.stderr)
        return 1
    print(f"demo app {args.app_version} listening on {app.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
