"""Redis clients from URLs: a single server, a Sentinel-monitored master, or a Cluster.

- `redis://[[user]:password@]host:port/db`, `rediss://...` (TLS), `unix:///path.sock?db=0`: redis-py's own URLs;
- `redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]` (`rediss+sentinel://`: TLS to
  the master): the master the sentinels name, found again after a failover; the credentials are the master's;
- `redis+cluster://[[user]:password@]host:port[,host:port...]` (`rediss+cluster://`): a Redis Cluster reached
  through any of those nodes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from ..exceptions import ConfigurationError

__all__ = ("REDIS_SCHEMES", "client_for_url")

_PLAIN = ("redis://", "rediss://", "unix://")
_SENTINEL = ("redis+sentinel://", "rediss+sentinel://")
_CLUSTER = ("redis+cluster://", "rediss+cluster://")
REDIS_SCHEMES = (*_PLAIN, *_SENTINEL, *_CLUSTER)

EXPECTED = (
    "expected redis://host:port/db, rediss://host:port/db (TLS), unix:///path/to/redis.sock?db=0, "
    "redis+sentinel://host:port[,host:port...]/service_name/db or redis+cluster://host:port[,host:port...]"
)


def client_for_url(url: str, options: dict[str, Any]) -> Redis | RedisCluster:
    """A new client for `url` with the connection `options` (timeouts, retry, pool size).

    Raises:
        ConfigurationError: not a supported or not a well-formed Redis URL.
    """
    if not isinstance(url, str) or not url.startswith(REDIS_SCHEMES):
        raise ConfigurationError(f"unsupported Redis URL {url!r}: {EXPECTED}")
    try:
        if url.startswith(_SENTINEL):
            return _sentinel_master(url, options)
        if url.startswith(_CLUSTER):
            return _cluster(url, options)
        return Redis.from_url(url, **options)
    except ConfigurationError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"malformed Redis URL {_redacted(url)!r}: {exc}") from exc


def _split(url: str) -> tuple[bool, str | None, str | None, list[tuple[str, int]], str]:
    """TLS?, username, password, [(host, port)], and the path after the hosts."""
    scheme, _, rest = url.partition("://")
    if "?" in rest:
        raise ConfigurationError(
            f"malformed Redis URL {_redacted(url)!r}: {scheme}:// URLs take no ?options; pass client options as "
            "RedisStore.from_url(url, **client_kwargs)"
        )
    tls = scheme.startswith("rediss")
    authority, slash, path = rest.partition("/")
    username = password = None
    if "@" in authority:
        credentials, _, authority = authority.rpartition("@")
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # `password@host`, as redis:// reads a lone user part
            username, password = None, unquote(user)
    nodes = []
    for node in authority.split(","):
        host, colon, port = node.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ConfigurationError(f"malformed Redis URL {_redacted(url)!r}: {node.strip()!r} is not host:port; {EXPECTED}")
        nodes.append((host.strip("[]"), int(port)))
    return tls, username, password, nodes, path if slash else ""


def _sentinel_master(url: str, options: dict[str, Any]) -> Redis:
    tls, username, password, nodes, path = _split(url)
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ConfigurationError(f"malformed Redis URL {_redacted(url)!r}: the path must be /service_name[/db]; {EXPECTED}")
    service, db = parts[0], int(parts[1]) if len(parts) == 2 else 0
    timeouts = {k: options[k] for k in ("socket_timeout", "socket_connect_timeout") if k in options}
    sentinel = Sentinel(nodes, sentinel_kwargs=timeouts, **timeouts)
    master_options = {**options, "db": db, "username": username, "password": password}
    if tls:
        master_options["ssl"] = True
    return sentinel.master_for(service, **master_options)


def _cluster(url: str, options: dict[str, Any]) -> RedisCluster:
    tls, username, password, nodes, path = _split(url)
    if path.strip("/") not in ("", "0"):
        raise ConfigurationError(f"malformed Redis URL {_redacted(url)!r}: a Redis Cluster has only database 0")
    cluster_options = {k: v for k, v in options.items() if k != "retry"}  # the cluster client retries by itself
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        username=username,
        password=password,
        ssl=tls,
        **cluster_options,
    )


def _redacted(url: str) -> str:
    """`url` without its credentials (whatever their form), for error messages."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"
