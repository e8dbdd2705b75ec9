"""REDIS_URL forms (plain, TLS, Sentinel) and the start-up check: AOF off reported, CONFIG disabled, Cluster refused."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bot.devtools.slack.server import FakeSlack
from bot.errors import ConfigError
from bot.store.connection import AOF_OFF, check_server, connect, parse_sentinel
from tests.harness import BOT_TOKEN, BotProcess, base_config, free_port, wait_until, write_config

PASSWORD = "s3cret-redis-pw"


class TestSentinelUrl:
    def test_parts_of_a_sentinel_url(self):
        target = parse_sentinel(f"redis+sentinel://:{PASSWORD}@10.0.0.1:26379,10.0.0.2:26380/mymaster/2"
                                "?failover_s=5&sentinel_password=other-pw")
        assert target.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
        assert (target.service, target.db, target.password, target.sentinel_password, target.failover_s, target.tls) \
            == ("mymaster", 2, PASSWORD, "other-pw", 5.0, False)
        assert parse_sentinel("rediss+sentinel://h:1/m").tls

    @pytest.mark.parametrize("url, says", [
        ("redis+sentinel://:{pw}@h:26379", "expected redis+sentinel://"),
        ("redis+sentinel://:{pw}@h/m/0", "is not host:port"),
        ("redis+sentinel://:{pw}@h:1/m/zero", "expected redis+sentinel://"),
        ("redis+sentinel://:{pw}@h:1/m?failover_s=soon", "failover_s must be a number"),
        ("redis+sentinel://:{pw}@h:1/m?colour=red", "unknown option(s) colour"),
        ("memcached://:{pw}@h:1/0", "the scheme must be redis://"),
    ])
    def test_a_malformed_url_is_one_line_that_hides_the_password(self, url, says):
        with pytest.raises(ConfigError) as caught:
            connect(url.format(pw=PASSWORD))
        assert says in str(caught.value) and PASSWORD not in str(caught.value) and "\n" not in str(caught.value)


def redis_server(tmp_path: Path, *args: str) -> Iterator[int]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    while "--cluster-enabled" in args and port > 55535:  # the cluster bus listens on port + 10000
        port = free_port()
    plain = "--tls-port" not in args
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path),
                             *(["--port", str(port)] if plain else ["--port", "0"]), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    slack = FakeSlack(token=BOT_TOKEN).start()
    yield slack
    slack.stop()


@pytest.fixture
def bot_on(tmp_path: Path, fake: FakeSlack) -> Iterator[Callable[[str], BotProcess]]:
    started: list[BotProcess] = []

    def start(url: str) -> BotProcess:
        bot = BotProcess(config_path=write_config(tmp_path / "env.yml", base_config()), slack_api_url=fake.base_url,
                         redis_url=url, key_prefix="conn:", log_path=tmp_path / f"bot-{len(started)}.log")
        started.append(bot)
        return bot.start()

    yield start
    for bot in started:
        bot.stop()


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


class TestTls:
    def test_rediss_url_serves_and_healthz_says_aof_is_off_without_the_password(self, tmp_path, bot_on):
        """A TLS Redis (self-signed, password, AOF off): the bot serves, /healthz and the log say a restart can
        lose runs, and the password appears nowhere."""
        if shutil.which("openssl") is None:
            pytest.skip("openssl is not installed")
        cert, key = self_signed(tmp_path)
        port = free_port()
        servers = redis_server(tmp_path, "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file",
                               str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
                               "--requirepass", PASSWORD, "--appendonly", "no")
        next(servers)
        try:
            url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
            wait_until(lambda: _pings(url), timeout=10)
            with pytest.raises(Exception):  # noqa: B017 - the plain protocol on a TLS port: any failure will do
                connect(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", timeout_s=0.5).ping()
            bot = bot_on(url)
            health = httpx.get(bot.url + "/healthz", timeout=5)
            assert health.status_code == 200 and health.json()["redis"] == "ok"
            assert any(line.startswith(AOF_OFF) for line in health.json()["details"]), health.json()
            logs = bot.logs()
            assert AOF_OFF in logs and f"rediss://:***@127.0.0.1:{port}/0" in logs
            assert PASSWORD not in logs + health.text
        finally:
            next(servers, None)


def _pings(url: str) -> bool:
    try:
        return bool(connect(url, timeout_s=0.5).ping())
    except Exception:
        return False


class TestServerCheck:
    def test_aof_on_reports_nothing(self, tmp_path):
        servers = redis_server(tmp_path, "--appendonly", "yes")
        port = next(servers)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            wait_until(lambda: _pings(url), timeout=10)
            check = check_server(connect(url))
            assert (check.reachable, check.cluster, check.persistence, check.details()) == (True, False, "aof", [])
        finally:
            next(servers, None)

    def test_config_disabled_says_it_could_not_check(self, tmp_path):
        """Managed Redis often renames CONFIG away: persistence is "could not check", never a failure."""
        servers = redis_server(tmp_path, "--rename-command", "CONFIG", "")
        port = next(servers)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            wait_until(lambda: _pings(url), timeout=10)
            [line] = check_server(connect(url)).details()
            assert line.startswith("could not check persistence: CONFIG GET is not allowed on this server")
        finally:
            next(servers, None)

    def test_cluster_mode_is_refused_at_start_in_one_line(self, tmp_path, bot_on):
        servers = redis_server(tmp_path, "--cluster-enabled", "yes", "--cluster-config-file",
                               str(tmp_path / "nodes.conf"))
        port = next(servers)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            wait_until(lambda: _pings(url), timeout=10)
            with pytest.raises(RuntimeError) as caught:
                bot_on(url)
            assert f"Redis at {url} runs in Cluster mode, which the bot does not support" in str(caught.value)
            assert "Traceback" not in str(caught.value)
        finally:
            next(servers, None)
