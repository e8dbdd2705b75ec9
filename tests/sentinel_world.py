"""A throwaway Redis primary, its replica and three sentinels on free ports, for failover tests and the P4 bench."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.harness import free_port, wait_until

SERVICE = "migbot"
# Sentinel declares the primary down after this long without an answer (production: tens of seconds).
DOWN_AFTER_MS = 1000


class SentinelWorld:
    """primary + replica (AOF on) + 3 sentinels, quorum 2; ``url`` is the bot's ``redis+sentinel://`` URL."""

    def __init__(self, directory: Path, *, failover_s: float = 20) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.server_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        self.url = f"redis+sentinel://{hosts}/{SERVICE}/0?failover_s={failover_s:g}"

    def _spawn(self, port: int, args: list[str]) -> None:
        log = open(self.directory / f"{port}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[port] = subprocess.Popen(["redis-server", *args], stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> SentinelWorld:
        primary, replica = self.server_ports
        for port in self.server_ports:
            data = self.directory / f"data-{port}"
            data.mkdir(exist_ok=True)
            extra = ["--replicaof", "127.0.0.1", str(primary)] if port == replica else []
            self._spawn(port, ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                               "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
                               "--dir", str(data), *extra])
        # Each sentinel is told its id, the replica and the other sentinels up front: discovering them takes ~10 s.
        ids = {port: f"{index + 1:040x}" for index, port in enumerate(self.sentinel_ports)}
        for port in self.sentinel_ports:
            conf = self.directory / f"sentinel-{port}.conf"
            others = "".join(f"sentinel known-sentinel {SERVICE} 127.0.0.1 {other} {ids[other]}\n"
                             for other in self.sentinel_ports if other != port)
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\nsentinel myid {ids[port]}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
                f"sentinel known-replica {SERVICE} 127.0.0.1 {replica}\n{others}")
            self._spawn(port, [str(conf), "--sentinel"])
        wait_until(self.ready, timeout=30, interval=0.2)
        return self

    def ready(self) -> bool:
        """The replica is in sync, and every sentinel knows the primary, the replica and the other two sentinels."""
        try:
            replication = redis.Redis(port=self.server_ports[1], socket_connect_timeout=0.5).info("replication")
            if replication.get("master_link_status") != "up":
                return False
            for port in self.sentinel_ports:
                info = redis.Redis(port=port, socket_connect_timeout=0.5, decode_responses=True).sentinel_master(SERVICE)
                if int(info.get("num-slaves", 0)) < 1 or int(info.get("num-other-sentinels", 0)) < 2:
                    return False
            return True
        except redis.RedisError:
            return False

    def primary_port(self) -> int:
        host, port = redis.Redis(port=self.sentinel_ports[0], socket_connect_timeout=0.5) \
            .sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def kill_primary(self) -> int:
        """SIGKILL the current primary; returns its port."""
        port = self.primary_port()
        proc = self.procs[port]
        proc.kill()
        proc.wait(5)
        return port

    def failed_over_from(self, port: int) -> bool:
        try:
            return self.primary_port() != port
        except redis.RedisError:
            return False

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
