"""Redis backend on `redis.asyncio`: short timeouts, no retries but on a dropped connection, one pool per store."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..exceptions import CacheError
from ._base import PendingGet, Store
from ._redis_claims import RedisClaims
from ._redis_early import EARLY_READS, PendingRedisGet, get_reply, send
from ._redis_urls import REDIS_SCHEMES, client_for_url

__all__ = ("RedisStore", "REDIS_SCHEMES")


_STORE_ERRORS = (RedisError, OSError, TimeoutError)
_POOL_EXHAUSTED: tuple[type[Exception], ...] = tuple(
    filter(None, [getattr(redis.exceptions, "MaxConnectionsError", None)])  # redis-py >= 5.3
)
T = TypeVar("T")


@dataclass
class RedisStore(RedisClaims, Store):
    """Entries as plain Redis strings (`SET ... PX`), counters as hashes (`HINCRBYFLOAT`).

    Pass a client you own, or build one with `from_url` (the store then owns and closes it).
    """

    client: Redis | RedisCluster
    owns_client: bool = False
    pool_timeout: float = 0.25
    """Seconds a command waits for a free pooled connection when all are busy (a burst of runs)."""
    claim_ttl: float = 15.0
    """Seconds a claim lives without renewal (renewed every third of it while the model works): how long the
    miss of a crashed holder waits before another process takes it over."""
    claims: bool = True
    """Cross-process single-flight (a claim per miss: one extra round trip). False: each process makes its own misses."""
    max_subscribers: int = 32
    """Waiters for other processes' claims that hold a pub/sub connection at once (the rest poll)."""
    claim_poll: float = 0.2
    """Seconds between looks at a claim for waiters without a pub/sub connection."""
    _closed: bool = dataclasses.field(default=False, init=False, repr=False)
    _subscribers: int = dataclasses.field(default=0, init=False, repr=False)
    _slotted_scripts: bool = dataclasses.field(default=True, init=False, repr=False)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 0.25,
        max_connections: int = 256,
        claim_ttl: float = 15.0,
        claims: bool = True,
        **client_kwargs: Any,
    ) -> RedisStore:
        """A store owning a new client for `url`: `redis://`, `rediss://` (TLS), `unix://`, a Sentinel-monitored
        master (`redis+sentinel://host:port[,host:port...]/service_name/db`) or a Cluster
        (`redis+cluster://host:port[,host:port...]`).

        `timeout` bounds connecting and every command, so an unreachable or stalled Redis costs a
        run at most that long. Only a dropped connection is retried (once, at once); otherwise the
        caller fails open instead. Beyond `max_connections` concurrent commands, a command waits
        up to `timeout` for a free connection (a burst of runs queues instead of failing).

        Raises:
            ConfigurationError: `url` is not a supported Redis URL.
        """
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # One immediate retry on a dropped connection only (server restart, idle timeout, CLIENT KILL, a
            # failover): the pool hands out a dead socket once, and without it that costs a breaker cooldown.
            # Timeouts are retried once by `_call` (idempotent commands only): a stalled server costs two `timeout`s.
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            "max_connections": max_connections,
            **client_kwargs,
        }
        client = client_for_url(url, options)
        return cls(client=client, owns_client=True, pool_timeout=timeout, claim_ttl=claim_ttl, claims=claims)

    async def get(self, key: str) -> bytes | None:
        """The string under `key`; a value of another type there (a hash, a list: not ours) reads as empty bytes,
        an unreadable entry, which the next answer overwrites, rather than as a store refusing reads."""
        return await self._call("GET", lambda: get_reply(self.client.get(key)))

    def starts_gets(self) -> bool:
        """A plain client and this class's own `get` only: a Cluster, a single-connection client, a subclass of
        `Redis` or a subclass of this store that reads its own way read with `get`."""
        client = self.client
        return (
            EARLY_READS
            and type(client) is Redis
            and client.connection is None
            and type(self).get is RedisStore.get
            and not self._closed
        )

    async def start_get(self, key: str) -> PendingGet | None:
        """`GET key` sent on a pooled connection, its answer read by `result()`. Failures are `get`'s: a connection
        that cannot be had or written to counts as its first attempt, which `result()` retries as `get` would."""
        if not self.starts_gets():
            return None
        pool = self.client.connection_pool
        try:
            connection = await pool.get_connection()
        except (*_POOL_EXHAUSTED, *_STORE_ERRORS) as exc:
            return PendingRedisGet(self, key, None, failed=exc)
        try:
            await send(connection, "GET", key)
        except BaseException as exc:
            await connection.disconnect(nowait=True)
            await pool.release(connection)
            if isinstance(exc, _STORE_ERRORS):
                return PendingRedisGet(self, key, None, failed=exc)
            raise
        return PendingRedisGet(self, key, connection)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        px = None if ttl is None else max(1, int(ttl * 1000))
        await self._call("SET", lambda: self.client.set(key, value, px=px))

    async def delete(self, key: str) -> bool:
        return bool(await self._call("DEL", lambda: self.client.delete(key)))

    async def delete_many(self, keys: Sequence[str]) -> int:
        """`UNLINK` (freed off the main thread) in pipelined batches of 500, one key per command (so a Cluster
        never sees a cross-slot command)."""

        async def unlink() -> int:
            deleted = 0
            for start in range(0, len(keys), 500):
                async with self.client.pipeline(transaction=False) as pipe:
                    for key in keys[start : start + 500]:
                        pipe.execute_command("UNLINK", key)  # (a Cluster pipeline's `unlink()` is not queued)
                    deleted += sum(await pipe.execute())
            return deleted

        return await self._call("UNLINK", unlink)

    async def keys(self, prefix: str) -> list[str]:
        """Entry keys under `prefix` by `SCAN` (never `KEYS`), strings only: counters are hashes."""

        async def scan() -> list[str]:
            match = _glob_escape(prefix) + "*"
            return sorted([k.decode() async for k in self.client.scan_iter(match=match, count=1000, _type="string")])

        return await self._call("SCAN", scan)

    async def add_counters(self, name: str, counters: Mapping[str, float]) -> None:
        async def update() -> None:
            # one key: atomic as a transaction on one server; a Cluster pipeline takes one key's commands as they are
            async with self.client.pipeline(transaction=not isinstance(self.client, RedisCluster)) as pipe:
                for field, value in counters.items():
                    pipe.hincrbyfloat(name, field, value)
                await pipe.execute()

        await self._call("HINCRBYFLOAT", update, idempotent=False)

    async def get_counters(self, prefix: str) -> dict[str, dict[str, float]]:
        async def read() -> tuple[list[bytes], list[Any]]:
            # only hashes: other keys under the prefix (entries, another app's data) are not counter groups
            match = _glob_escape(prefix) + "*"
            names = [name async for name in self.client.scan_iter(match=match, count=500, _type="hash")]
            async with self.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(name)
                return names, await pipe.execute(raise_on_error=False)  # a key replaced meanwhile is skipped

        names, groups = await self._call("counter read", read)
        return {
            name.decode(): {field.decode(): float(value) for field, value in group.items()}
            for name, group in zip(names, groups)
            if isinstance(group, dict) and group
        }

    async def _close(self) -> None:
        self._closed = True
        if self.owns_client:
            await self.client.aclose()
            # a Sentinel-managed master: the clients that asked the sentinels where the master is
            manager = getattr(getattr(self.client, "connection_pool", None), "sentinel_manager", None)
            for sentinel in getattr(manager, "sentinels", ()):
                await sentinel.aclose()

    async def _call(
        self, what: str, command: Callable[[], Awaitable[T]], *, idempotent: bool = True, failed: Exception | None = None
    ) -> T:
        """Run `command`, turning Redis failures into `CacheError`. A dropped connection (a failover, a restart) is
        tried once more at once when running the command twice is harmless (not for counters or claims). `failed`:
        the first attempt, already made, raised it."""
        if self._closed:  # redis-py would silently open a new connection that nobody closes (a leaked socket)
            raise CacheError("the Redis store is closed")
        deadline = None
        retried = not idempotent
        timed_out = not idempotent
        while True:
            try:
                if failed is not None:
                    exc, failed = failed, None
                    raise exc
                return await command()
            except _POOL_EXHAUSTED as exc:  # every pooled connection is busy: wait a little for one
                now = time.monotonic()
                deadline = now + self.pool_timeout if deadline is None else deadline
                if now >= deadline:
                    raise CacheError(f"Redis {what} failed: no free connection: {exc!r}") from exc
                await asyncio.sleep(0.002)  # (not a BlockingConnectionPool: it cannot be used at loop shutdown)
            except RedisConnectionError as exc:  # (after the pool's error: redis-py 8 derives it from this one)
                if retried:
                    raise CacheError(f"Redis {what} failed: {exc!r}") from exc
                retried = True
            except redis.exceptions.ResponseError as exc:
                # the server answered: out of memory under `noeviction`, a read-only replica, a refused command
                refused = not isinstance(exc, redis.exceptions.ClusterError)
                raise CacheError(f"Redis {what} failed: {exc!r}", refused=refused) from exc
            except _STORE_ERRORS as exc:
                # A timeout is as often a busy event loop (a garbage collection, the CPU burst of a process starting
                # with many calls at once) as a slow Redis: an idempotent command is sent once more before the store
                # counts as down, so a stall costs a command two timeouts at most, and never switches the cache off.
                if isinstance(exc, (TimeoutError, redis.exceptions.TimeoutError)) and not timed_out:
                    timed_out = True
                    continue
                raise CacheError(f"Redis {what} failed: {exc!r}") from exc


def _glob_escape(text: str) -> str:
    """`text` with Redis glob metacharacters escaped, to match it literally in SCAN."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
