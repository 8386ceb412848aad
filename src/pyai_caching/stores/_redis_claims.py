"""Claims on Redis, for cross-process single-flight: `SET <ns>:lock:<rest of key> <token> NX PX`, renewed and
released only by their token (Lua), waiters woken by a `PUBLISH` on the lock's name when it is released.

The claim goes with the entry's re-read, and the entry's write with the release, as one script each (one command is
cheaper to send and read than a pipeline of two, and atomic); on a Cluster, and on a server in cluster mode reached
by a plain client (it refuses scripts over keys of two hash slots), as separate single-key commands.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ..exceptions import CacheError

__all__ = ("RedisClaims",)

T = TypeVar("T")


class RedisClaims:
    """The claim hooks of `RedisStore` (`Store.claim`, `claim_and_read`, `set_and_release`, `renew_claim`,
    `release_claim`, `wait_for_claim`)."""

    client: Redis | RedisCluster
    claims: bool
    max_subscribers: int
    claim_poll: float
    _subscribers: int
    _slotted_scripts: bool
    """Whether the server runs scripts over keys of two hash slots (not in cluster mode)."""

    async def _call(self, what: str, command: Callable[[], Awaitable[T]], *, idempotent: bool = True) -> T:
        raise NotImplementedError  # pragma: no cover - `RedisStore._call`

    async def claim(self, key: str, ttl: float) -> str | None:
        if not self.claims:
            raise NotImplementedError("claims are switched off for this store")
        token = secrets.token_hex(16)
        ms = max(1, int(ttl * 1000))
        acquired = await self._call(
            "SET NX", lambda: self.client.set(_lock_name(key), token, nx=True, px=ms), idempotent=False
        )
        return token if acquired else None

    async def claim_and_read(self, key: str, ttl: float) -> tuple[str | None, bytes | None]:
        """`SET NX` on the lock and `GET` of the entry in one script: one round trip (on a Cluster, one after the
        other, as lock and entry live on different nodes; pipelined where the server refuses scripts over keys of
        two hash slots: a cluster-mode server reached by a plain client, a proxy endpoint)."""
        if not self.claims:
            raise NotImplementedError("claims are switched off for this store")
        if isinstance(self.client, RedisCluster):
            return await super().claim_and_read(key, ttl)
        token = secrets.token_hex(16)
        ms = max(1, int(ttl * 1000))
        lock = _lock_name(key)

        async def claim() -> tuple[Any, Any]:
            if self._slotted_scripts:
                try:
                    return tuple(await self.client.eval(_CLAIM_AND_READ, 2, lock, key, token, ms))  # type: ignore[arg-type]
                except redis.exceptions.ResponseError as exc:
                    if not _cross_slot(exc):
                        raise
                    self._slotted_scripts = False
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(lock, token, nx=True, px=ms)
                pipe.get(key)
                acquired, data = await pipe.execute(raise_on_error=False)
            if isinstance(acquired, Exception):
                raise acquired
            return acquired, b"" if isinstance(data, Exception) else data  # WRONGTYPE: an unreadable entry

        acquired, data = await self._call("claim", claim, idempotent=False)
        return (token if acquired else None), data

    async def set_and_release(self, key: str, value: bytes, ttl: float | None, token: str) -> None:
        """The entry's `SET` and the claim's release in one script: one round trip, and a waiter woken by the
        release finds the entry (on a Cluster: one after the other; pipelined where scripts over two hash slots
        are refused)."""
        if isinstance(self.client, RedisCluster):
            return await super().set_and_release(key, value, ttl, token)
        lock = _lock_name(key)

        async def write() -> None:
            if self._slotted_scripts:
                try:
                    px = "" if ttl is None else max(1, int(ttl * 1000))
                    await self.client.eval(_SET_AND_RELEASE, 2, key, lock, value, px, token)  # type: ignore[arg-type]
                    return
                except redis.exceptions.ResponseError as exc:
                    if not _cross_slot(exc):
                        raise
                    self._slotted_scripts = False
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(key, value, px=None if ttl is None else max(1, int(ttl * 1000)))
                pipe.eval(_RELEASE, 1, lock, token)
                written, _ = await pipe.execute(raise_on_error=False)
            if isinstance(written, Exception):
                raise written

        await self._call("write and release", write)

    async def renew_claim(self, key: str, token: str, ttl: float) -> bool:
        ms = max(1, int(ttl * 1000))
        return bool(await self._call("EVAL", lambda: self.client.eval(_RENEW, 1, _lock_name(key), token, ms)))

    async def release_claim(self, key: str, token: str) -> None:
        await self._call("EVAL", lambda: self.client.eval(_RELEASE, 1, _lock_name(key), token))

    async def wait_for_claim(self, key: str, timeout: float) -> None:
        """Subscribes to the lock's channel, then checks it still exists (so a release in between is not missed).
        At most `max_subscribers` waiters hold a pub/sub connection at once; the others (and every waiter while
        the pool is exhausted) look again after `claim_poll` seconds instead."""
        name = _lock_name(key)
        if self._subscribers >= self.max_subscribers:
            await asyncio.sleep(min(self.claim_poll, timeout))
            return

        async def wait() -> None:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(name)
                if not await self.client.exists(name):
                    return
                deadline = time.monotonic() + timeout
                while (left := deadline - time.monotonic()) > 0:
                    if await pubsub.get_message(timeout=min(left, 1.0)) is not None:
                        return
                    if not await self.client.exists(name):  # expired: its holder is gone
                        return
            finally:
                await pubsub.aclose()

        self._subscribers += 1
        try:
            await self._call("SUBSCRIBE", wait)
        except CacheError:  # no free connection, or a failing server: look again later rather than pay twice
            await asyncio.sleep(min(self.claim_poll, timeout))
        finally:
            self._subscribers -= 1


# Scripts rather than pipelines: one command is cheaper to send and read than a pipeline of two (redis-py builds a
# pipeline object per use), and atomic.
_CLAIM_AND_READ = (
    "local acquired = redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) "
    "local entry = redis.pcall('get', KEYS[2]) "
    "if type(entry) == 'table' and entry.err then entry = '' end "  # WRONGTYPE: not our entry, an unreadable one
    "return {acquired and 1 or 0, entry}"
)
_SET_AND_RELEASE = (
    "if ARGV[2] == '' then redis.call('set', KEYS[1], ARGV[1]) else redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) end "
    "if redis.call('get', KEYS[2]) == ARGV[3] then redis.call('del', KEYS[2]) redis.call('publish', KEYS[2], 'released') end "
    "return 1"
)
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) "
    "redis.call('publish', KEYS[1], 'released') return 1 end return 0"
)


def _cross_slot(exc: Exception) -> bool:
    """The server refused a command over keys of two hash slots (it runs in cluster mode)."""
    return isinstance(exc, _CROSS_SLOT) or "CROSSSLOT" in str(exc)


_CROSS_SLOT: tuple[type[Exception], ...] = tuple(
    filter(None, [getattr(redis.exceptions, "ClusterCrossSlotError", None)])
)


def _lock_name(key: str) -> str:
    """`<ns>:lock:<rest>`: outside the entries' prefix (`<ns>:v2:`), so listing entries never sees it."""
    namespace, _, rest = key.partition(":")
    return f"{namespace}:lock:{rest}"
