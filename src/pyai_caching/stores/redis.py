"""Redis backend on `redis.asyncio`: short timeouts, no client-side retries, one pool per store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..exceptions import CacheError, ConfigurationError
from ._base import Store

__all__ = ("RedisStore", "REDIS_SCHEMES")

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

_STORE_ERRORS = (RedisError, OSError, TimeoutError)


@dataclass
class RedisStore(Store):
    """Entries as plain Redis strings (`SET ... PX`), counters as hashes (`HINCRBYFLOAT`).

    Pass a client you own, or build one with `from_url` (the store then owns and closes it).
    """

    client: Redis
    owns_client: bool = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 0.25,
        max_connections: int = 256,
        **client_kwargs: Any,
    ) -> RedisStore:
        """A store owning a new client for `url` (`redis://`, `rediss://` or `unix://`).

        `timeout` bounds connecting and every command, so an unreachable or stalled Redis costs a
        run at most that long. Client-side retries are off: the caller fails open instead.

        Raises:
            ConfigurationError: `url` is not a supported Redis URL.
        """
        if not isinstance(url, str) or not url.startswith(REDIS_SCHEMES):
            raise ConfigurationError(
                f"unsupported Redis URL {url!r}: expected redis://host:port/db, rediss://host:port/db "
                "(TLS) or unix:///path/to/redis.sock?db=0"
            )
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "max_connections": max_connections,
            **client_kwargs,
        }
        try:
            client = Redis.from_url(url, **options)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"malformed Redis URL {url!r}: {exc}") from exc
        return cls(client=client, owns_client=True)

    async def get(self, key: str) -> bytes | None:
        try:
            return await self.client.get(key)
        except _STORE_ERRORS as exc:
            raise CacheError(f"Redis GET failed: {exc!r}") from exc

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        try:
            await self.client.set(key, value, px=None if ttl is None else max(1, int(ttl * 1000)))
        except _STORE_ERRORS as exc:
            raise CacheError(f"Redis SET failed: {exc!r}") from exc

    async def delete(self, key: str) -> bool:
        try:
            return bool(await self.client.delete(key))
        except _STORE_ERRORS as exc:
            raise CacheError(f"Redis DEL failed: {exc!r}") from exc

    async def add_counters(self, name: str, counters: Mapping[str, float]) -> None:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for field, value in counters.items():
                    pipe.hincrbyfloat(name, field, value)
                await pipe.execute()
        except _STORE_ERRORS as exc:
            raise CacheError(f"Redis HINCRBYFLOAT failed: {exc!r}") from exc

    async def get_counters(self, prefix: str) -> dict[str, dict[str, float]]:
        try:
            names = [name async for name in self.client.scan_iter(match=_glob_escape(prefix) + "*", count=500)]
            async with self.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(name)
                groups = await pipe.execute()
        except _STORE_ERRORS as exc:
            raise CacheError(f"Redis counter read failed: {exc!r}") from exc
        return {
            name.decode(): {field.decode(): float(value) for field, value in group.items()}
            for name, group in zip(names, groups)
            if group
        }

    async def aclose(self) -> None:
        if self.owns_client:
            await self.client.aclose()


def _glob_escape(text: str) -> str:
    """`text` with Redis glob metacharacters escaped, to match it literally in SCAN."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
