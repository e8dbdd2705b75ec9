"""The demo app under migration, the maintenance webhook client and the reachability probe, over real sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from bot.devtools.demoapp import USER_TABLE_SQL, DemoApp
from bot.errors import DeployError
from bot.integrations.http import probe, set_maintenance_webhook

TOKEN = "maint-secret-7c1f9a"


@pytest.fixture(scope="module")
def running_app() -> Iterator[DemoApp]:
    with DemoApp(version="2.3.4", maintenance_token=TOKEN) as running:
        yield running


@pytest.fixture
def app(running_app: DemoApp) -> DemoApp:
    running_app.reset()
    return running_app


@pytest.fixture
def http(app: DemoApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app.base_url, timeout=5) as client:
        yield client


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sign_up(http: httpx.Client, email: str = "ruth@example.com", password: str = "Test123!") -> str:
    assert http.post("/auth/register", json={"email": email, "password": password}).status_code == 201
    response = http.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200
    return str(response.json()["token"])


class TestDemoApp:
    def test_health_reports_version(self, http: httpx.Client) -> None:
        """GET /health answers 200 with status ok and the configured version."""
        response = http.get("/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "version": "2.3.4"}

    def test_register_login_counsel_chain(self, http: httpx.Client) -> None:
        """A registered user can log in and the login token opens /counsel."""
        token = sign_up(http)
        response = http.post("/counsel", json={"message": "I feel anxious"}, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 201
        assert "reply" in response.json()

    def test_register_twice_conflicts(self, http: httpx.Client) -> None:
        """Registering an email that exists answers 409."""
        sign_up(http)
        response = http.post("/auth/register", json={"email": "ruth@example.com", "password": "other"})
        assert response.status_code == 409

    def test_login_with_wrong_password_is_401(self, http: httpx.Client) -> None:
        """A wrong password is refused with 401 and no token."""
        sign_up(http)
        response = http.post("/auth/login", json={"email": "ruth@example.com", "password": "nope"})
        assert response.status_code == 401
        assert "token" not in response.json()

    def test_counsel_without_token_is_401(self, http: httpx.Client) -> None:
        """/counsel without a valid bearer token answers 401."""
        assert http.post("/counsel", json={"message": "hi"}).status_code == 401
        assert http.post("/counsel", json={"message": "hi"}, headers={"Authorization": "Bearer forged"}).status_code == 401

    def test_maintenance_on_shows_503_page(self, app: DemoApp, http: httpx.Client) -> None:
        """With maintenance on, /health and the auth routes answer 503 with the HTML maintenance page."""
        response = http.post("/admin/maintenance", json={"enabled": True}, headers={"X-Maintenance-Token": TOKEN})
        assert response.status_code == 200 and app.maintenance
        health = http.get("/health")
        assert health.status_code == 503
        assert health.headers["content-type"].startswith("text/html")
        assert "Service Temporarily Unavailable" in health.text
        assert http.post("/auth/login", json={"email": "a@b.co", "password": "x"}).status_code == 503

    def test_maintenance_off_restores_service(self, http: httpx.Client) -> None:
        """Switching maintenance off makes /health answer 200 again."""
        headers = {"X-Maintenance-Token": TOKEN}
        http.post("/admin/maintenance", json={"enabled": True}, headers=headers)
        assert http.post("/admin/maintenance", json={"enabled": False}, headers=headers).status_code == 200
        assert http.get("/health").status_code == 200

    def test_wrong_maintenance_token_is_403(self, app: DemoApp, http: httpx.Client) -> None:
        """A wrong or missing maintenance token answers 403 and leaves the mode unchanged."""
        assert http.post("/admin/maintenance", json={"enabled": True},
                         headers={"X-Maintenance-Token": "guess"}).status_code == 403
        assert http.post("/admin/maintenance", json={"enabled": True}).status_code == 403
        assert not app.maintenance

    def test_maintenance_token_bypasses_the_page(self, app: DemoApp, http: httpx.Client) -> None:
        """During maintenance a request carrying the valid token reaches the app; a wrong token does not."""
        app.state.maintenance = True
        assert http.get("/health", headers={"X-Maintenance-Token": TOKEN}).status_code == 200
        assert http.get("/health", headers={"X-Maintenance-Token": "guess"}).status_code == 503

    def test_fail_path_answers_500(self) -> None:
        """The fail_path knob makes that one path answer 500 while others still work."""
        with DemoApp(fail_path="/auth/login") as failing, httpx.Client(base_url=failing.base_url) as http:
            assert http.post("/auth/login", json={"email": "a@b.co", "password": "x"}).status_code == 500
            assert http.get("/health").status_code == 200

    def test_slow_path_delays_answer(self) -> None:
        """The slow_path knob delays that path by about delay_s."""
        with DemoApp(slow_path="/health", delay_s=0.3) as slow, httpx.Client(base_url=slow.base_url) as http:
            response = http.get("/health")
            assert response.status_code == 200
            assert response.elapsed.total_seconds() >= 0.28

    def test_stop_releases_port(self) -> None:
        """After stop() nothing listens on the app's port any more."""
        app = DemoApp().start()
        url = app.base_url
        app.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health", timeout=2)


class TestDemoAppWithDatabase:
    def test_users_are_stored_in_user_table(self, scratch_db: str) -> None:
        """With a database_url and the "User" table in place, registration writes a row there."""
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute(USER_TABLE_SQL)
        with DemoApp(database_url=scratch_db) as app, httpx.Client(base_url=app.base_url) as http:
            token = sign_up(http, email="naomi@example.com")
            assert http.post("/counsel", json={"message": "hi"},
                             headers={"Authorization": f"Bearer {token}"}).status_code == 201
        with psycopg.connect(scratch_db) as conn:
            rows = conn.execute('SELECT "email" FROM "User"').fetchall()
        assert rows == [("naomi@example.com",)]

    def test_missing_user_table_is_a_500_naming_it(self, scratch_db: str) -> None:
        """Before the migration creates "User", register answers 500 and says which relation is missing."""
        with DemoApp(database_url=scratch_db) as app, httpx.Client(base_url=app.base_url) as http:
            response = http.post("/auth/register", json={"email": "a@b.co", "password": "x"})
        assert response.status_code == 500
        assert '"User"' in response.json()["detail"]


class TestMaintenanceWebhook:
    def test_webhook_flips_the_app(self, app: DemoApp, http: httpx.Client) -> None:
        """set_maintenance_webhook turns the demo app's maintenance page on and off again."""
        url = app.base_url + "/admin/maintenance"
        set_maintenance_webhook(url, enabled=True, token=TOKEN)
        assert app.maintenance
        assert http.get("/health").status_code == 503
        set_maintenance_webhook(url, enabled=False, token=TOKEN)
        assert not app.maintenance
        assert http.get("/health").status_code == 200

    def test_bad_token_raises_deploy_error_without_token(self, app: DemoApp) -> None:
        """A refused token raises DeployError naming the 403 but never the token itself."""
        bad = "wrong-token-5d2e8b"
        with pytest.raises(DeployError) as info:
            set_maintenance_webhook(app.base_url + "/admin/maintenance", enabled=True, token=bad)
        message = str(info.value)
        assert "403" in message and "maintenance mode on" in message
        assert bad not in message and "\n" not in message
        assert not app.maintenance

    def test_unreachable_webhook_is_one_line(self) -> None:
        """A closed port raises DeployError with a one-line connection error."""
        with pytest.raises(DeployError) as info:
            set_maintenance_webhook(f"http://127.0.0.1:{closed_port()}/admin/maintenance", enabled=False,
                                    token=TOKEN, timeout_s=2)
        assert "cannot connect" in str(info.value) and "\n" not in str(info.value)


class TestProbe:
    def test_probe_ok(self, app: DemoApp) -> None:
        """probe() reports ok, the status and a latency for a healthy endpoint."""
        ok, status, latency_ms, error = probe(app.base_url + "/health", 200, 5)
        assert (ok, status, error) == (True, 200, None)
        assert latency_ms > 0

    def test_probe_wrong_status(self, app: DemoApp) -> None:
        """probe() reports the status it got when it is not the expected one."""
        app.state.maintenance = True
        result = probe(app.base_url + "/health", 200, 5)
        assert not result.ok and result.status == 503
        assert result.error == "expected 200, got 503"

    def test_probe_closed_port(self) -> None:
        """probe() never raises: a closed port is a failed result with one line."""
        result = probe(f"http://127.0.0.1:{closed_port()}/health", 200, 2)
        assert not result.ok and result.status is None
        assert result.error is not None and result.error.startswith("cannot connect")
