"""The one place Redis clients are built from ``REDIS_URL`` (plain, TLS or Sentinel), and the start-up check of the server.

Accepted forms of ``REDIS_URL``:

- ``redis://[[user]:password@]host:port/db`` — one server;
- ``rediss://…`` — the same over TLS; redis-py's query options apply (``?ssl_ca_certs=/path/ca.pem``,
  ``ssl_cert_reqs=required``, ``ssl_certfile``/``ssl_keyfile`` for client certificates);
- ``redis+sentinel://[[user]:password@]host:port[,host:port…]/service/db`` — Sentinel: the sentinels are asked
  for the current primary of ``service`` on every new connection, so a failover needs no restart. The password
  is the primary's; ``?sentinel_password=…`` sets the sentinels' own. ``rediss+sentinel://`` uses TLS to both.
  A Sentinel client retries a lost connection for ``?failover_s=`` seconds (default 15), rediscovering the
  primary each time, so a failover delays calls instead of failing them; a plain URL fails fast instead.

Redis Cluster is refused at start (``check_server``): the run store's Lua scripts and MULTI/WATCH transactions
touch several keys of one run, environment and window together, which Cluster allows only when every such key
shares a hash tag; retagging would rename every stored key (``tests/test_upgrade.py`` forbids that), and the
bot's data is small enough that one primary with a replica and Sentinel gives the availability without it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from bot.config import SENTINEL_SCHEMES
from bot.errors import ConfigError
from bot.redact import redact, register_secret

log = logging.getLogger(__name__)

DEFAULT_FAILOVER_S = 15.0
_BACKOFF_CAP_S = 0.5
AOF_OFF = "AOF off: a Redis restart can lose runs"


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None
    sentinel_password: str | None
    tls: bool
    failover_s: float
    ssl_options: dict[str, str]


def redacted(url: str) -> str:
    """``url`` fit for a log line or an error: the password replaced (and any registered secret)."""
    return redact(url)


def parse_sentinel(url: str) -> SentinelTarget:
    """The parts of a ``redis+sentinel://`` URL; a malformed one is a ConfigError that says the expected form."""
    form = "expected redis+sentinel://[:password@]host:port[,host:port…]/service-name[/db]"
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ConfigError(f"REDIS_URL {redacted(url)}: not a Sentinel URL ({form})")
    netloc = parts.netloc
    userinfo, _, hosts = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, _, secret = userinfo.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) or None)
    sentinels: list[tuple[str, int]] = []
    for item in filter(None, hosts.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"REDIS_URL {redacted(url)}: sentinel {item!r} is not host:port ({form})")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError(f"REDIS_URL {redacted(url)}: {form}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    failover_text = query.pop("failover_s", str(DEFAULT_FAILOVER_S))
    try:
        failover_s = float(failover_text)
    except ValueError:
        raise ConfigError(f"REDIS_URL {redacted(url)}: failover_s must be a number of seconds") from None
    sentinel_password: str | None = query.pop("sentinel_password", None)
    unknown = sorted(set(query) - {"ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile"})
    if unknown:
        raise ConfigError(f"REDIS_URL {redacted(url)}: unknown option(s) {', '.join(unknown)} "
                          "(known: failover_s, sentinel_password, ssl_ca_certs, ssl_cert_reqs, ssl_certfile, "
                          "ssl_keyfile)")
    register_secret(password)
    register_secret(sentinel_password)
    return SentinelTarget(sentinels=sentinels, service=unquote(path[0]), db=int(path[1]) if len(path) == 2 else 0,
                          username=username, password=password, sentinel_password=sentinel_password,
                          tls=parts.scheme == "rediss+sentinel", failover_s=max(0.0, failover_s), ssl_options=query)


def _retry(budget_s: float) -> Retry:
    """Retry lost connections for about ``budget_s`` (backoff 0.1 s doubling to 0.5 s), then give up."""
    return Retry(ExponentialBackoff(cap=_BACKOFF_CAP_S, base=0.1), retries=max(1, math.ceil(budget_s / _BACKOFF_CAP_S)))


def connect(url: str, *, timeout_s: float = 2.0, decode_responses: bool = True) -> redis.Redis:
    """The bot's Redis client for ``url``: every call gives up quickly, so a dead Redis turns into a clear error
    (behind Sentinel, only after the failover budget: a failover is expected there, and riding it out is the point)."""
    scheme = urlsplit(url).scheme
    common: dict[str, Any] = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s,
                              "health_check_interval": 30, "decode_responses": decode_responses}
    if scheme in SENTINEL_SCHEMES:
        target = parse_sentinel(url)
        tls: dict[str, Any] = {"ssl": True, **target.ssl_options} if target.tls else {}
        sentinel = Sentinel(target.sentinels,  # type: ignore[no-untyped-call]  # redis.sentinel is untyped
                            sentinel_kwargs={"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s,
                                             "password": target.sentinel_password, **tls})
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]  # redis.sentinel is untyped
            target.service, db=target.db, username=target.username, password=target.password,
            retry=_retry(target.failover_s), retry_on_error=[RedisConnectionError, RedisTimeoutError],
            **common, **tls)
        return client
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"REDIS_URL {redacted(url)}: the scheme must be redis://, rediss:// (TLS) or "
                          "redis+sentinel:// (see README 'Configuration reference')")
    parts = urlsplit(url)
    register_secret(unquote(parts.password) if parts.password else None)
    return redis.Redis.from_url(url, **common)


def reachable(url: str, *, timeout_s: float = 1.0) -> bool:
    """Whether a Redis server answers at ``url`` (the demo starts a private one when none does)."""
    try:
        return bool(connect(url, timeout_s=timeout_s).ping())
    except (RedisError, ConfigError):
        return False


def with_bytes(client: redis.Redis) -> redis.Redis:
    """A client on the same server (or Sentinel service) as ``client`` but returning bytes (for pickles)."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["decode_responses"] = False
    if isinstance(pool, SentinelConnectionPool):
        return redis.Redis(connection_pool=SentinelConnectionPool(  # type: ignore[no-untyped-call]  # untyped
            pool.service_name, pool.sentinel_manager, connection_class=pool.connection_class, **kwargs))
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def behind_sentinel(client: redis.Redis) -> bool:
    """Whether ``client`` follows a Sentinel-managed primary (which has replicas that a failover promotes)."""
    return isinstance(client.connection_pool, SentinelConnectionPool)


@dataclass(frozen=True)
class ServerCheck:
    """What the bot found out about its Redis at start: reachable, Cluster mode, persistence."""

    reachable: bool
    cluster: bool = False
    persistence: str = "unknown"  # "aof", "off" or "unknown"
    note: str = ""

    def details(self) -> list[str]:
        """Lines for the log and ``/healthz``: what may lose or refuse data."""
        if not self.reachable:
            return [f"could not check persistence: {self.note}"]
        if self.persistence == "off":
            return [AOF_OFF + " (set appendonly yes, see README 'Connect a real workspace')"]
        if self.persistence == "unknown":
            return [f"could not check persistence: {self.note}"]
        return []


def check_server(client: redis.Redis) -> ServerCheck:
    """Ask the server whether it is a Cluster node and whether AOF persistence is on.

    Managed services often disable ``CONFIG``: the answer is then "could not check", never a failure.
    """
    try:
        info = client.info("cluster")
    except ResponseError as exc:
        info = {}
        log.debug("INFO cluster refused: %s", exc)
    except RedisError as exc:
        return ServerCheck(reachable=False, note=f"Redis unreachable ({type(exc).__name__})")
    cluster = str(info.get("cluster_enabled", "0")) == "1"
    try:
        answer = client.config_get("appendonly")
    except ResponseError as exc:
        return ServerCheck(reachable=True, cluster=cluster,
                           note=f"CONFIG GET is not allowed on this server ({str(exc).splitlines()[0][:120]}); "
                                "make sure AOF persistence is on in its settings")
    except RedisError as exc:
        return ServerCheck(reachable=False, cluster=cluster, note=f"Redis unreachable ({type(exc).__name__})")
    value = str(answer.get("appendonly", "")).lower()
    persistence = "aof" if value == "yes" else "off" if value == "no" else "unknown"
    return ServerCheck(reachable=True, cluster=cluster, persistence=persistence,
                       note="" if persistence != "unknown" else "CONFIG GET appendonly gave no answer")


def refuse_cluster(url: str, check: ServerCheck) -> None:
    """Raise a ConfigError naming the server when it runs in Cluster mode (see the module docstring for why)."""
    if check.cluster:
        raise ConfigError(f"Redis at {redacted(url)} runs in Cluster mode, which the bot does not support (its "
                          "multi-key scripts need one node): use a single primary, with replicas and Sentinel "
                          "for failover (REDIS_URL=redis+sentinel://…), or a managed Redis with cluster mode off")


class ServerWatch:
    """The start-up check of one Redis, kept for ``/healthz``; checked again while the server was unreachable."""

    def __init__(self, client: redis.Redis, url: str) -> None:
        self.client = client
        self.url = url
        self.last = ServerCheck(reachable=False, note="not checked yet")

    def check(self) -> ServerCheck:
        """Check now; a Cluster node is refused (ConfigError), what may lose data is logged once per change."""
        current = check_server(self.client)
        refuse_cluster(self.url, current)
        if current != self.last:
            for line in current.details():
                log.warning("Redis at %s: %s", redacted(self.url), line)
        self.last = current
        return current

    def details(self) -> list[str]:
        """Lines for ``/healthz``: the last check's, after a new one if the server could not be reached before."""
        if not self.last.reachable:
            try:
                self.check()
            except ConfigError as exc:
                return [str(exc)]
        return self.last.details()
