"""Shared test fixtures: real PostgreSQL, real Redis, moto's server mode, scratch databases."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis

# The e2e world (bot process + stand-ins) is a fixture plugin shared by the e2e test modules.
pytest_plugins = ["tests.e2e"]

PG_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _with_db(url: str, dbname: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """URL of the maintenance database on the test PostgreSQL server."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT 1")
    return PG_ADMIN_URL


@pytest.fixture
def scratch_db(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards. Yields its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(pg_admin_url, name)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def scratch_db_factory(pg_admin_url: str) -> Iterator[object]:
    """Call it to get more fresh databases in one test; all are dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return _with_db(pg_admin_url, name)

    yield make
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the shared test Redis (never stopped by tests)."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    client.ping()
    client.close()
    return REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A unique Redis key prefix for one test; its keys are deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=prefix + "*", count=500):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode on a free loopback port: boto3 reaches it over real HTTP via endpoint_url."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    import httpx

    for _ in range(100):
        try:
            httpx.get(url + "/moto-api/data.json", timeout=1)
            break
        except httpx.HTTPError:
            import time

            time.sleep(0.05)
    yield url
    server.stop()


@pytest.fixture
def moto_reset(moto_endpoint: str) -> str:
    """Reset moto's state before a test that needs a clean AWS account."""
    import httpx

    httpx.post(moto_endpoint + "/moto-api/reset", timeout=10)
    return moto_endpoint
