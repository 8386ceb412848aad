"""A Redis GET sent now and its answer read later (`RedisStore.start_get`), on a connection checked out of the pool."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.exceptions

from ._base import PendingGet

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = ("EARLY_READS", "PendingRedisGet", "get_reply", "send")


async def send(connection: Any, *args: Any) -> None:
    """`connection.send_command(*args)` bounded by the connection's `socket_timeout` under a timer of our own: redis-py
    bounds a write with `asyncio.wait_for`, which runs it as a task of its own (an extra turn of the event loop, tens
    of microseconds). The connection is checked out of its pool: nothing else uses it meanwhile."""
    timeout = connection.socket_timeout
    if not timeout:
        await connection.send_command(*args)
        return
    connection.socket_timeout = None
    try:
        async with asyncio.timeout(timeout):
            await connection.send_command(*args)
    finally:
        connection.socket_timeout = timeout


EARLY_READS = tuple(int(p) for p in redis.__version__.split(".")[:2] if p.isdigit()) >= (5, 3)
"""`ConnectionPool.get_connection()` without a command name (redis-py 5.3 and newer)."""


async def get_reply(read: Awaitable[Any]) -> bytes | None:
    """A GET's answer; a value of another type under the key reads as empty bytes (an unreadable entry)."""
    try:
        return await read  # type: ignore[no-any-return]
    except redis.exceptions.ResponseError as exc:
        if str(exc).startswith("WRONGTYPE"):
            return b""
        raise


@dataclass(eq=False)
class PendingRedisGet(PendingGet):
    """A GET sent on `connection` (None: it could not be sent, `failed` says why), which goes back to the pool once
    its answer is read (redis-py disconnects a connection whose read fails or is cancelled, so an answer never
    reaches the next command)."""

    store: RedisStore
    key: str
    connection: Any
    failed: Exception | None = None

    async def result(self) -> bytes | None:
        """The answer, retried as `get` retries (the retry is a new GET)."""
        store, key = self.store, self.key

        async def get() -> bytes | None:
            if self.connection is None:
                return await get_reply(store.client.get(key))
            return await get_reply(self._read())

        try:
            return await store._call("GET", get, failed=self.failed)  # pyright: ignore[reportPrivateUsage]
        finally:
            await self.discard()  # (the store was closed meanwhile: the connection still goes back)

    async def discard(self) -> None:
        """The answer is read if it comes soon (the connection is reused); a server slower than that is not waited
        for: the connection is closed instead."""
        if self.connection is None:
            return
        try:
            async with asyncio.timeout(min(_DRAIN_WAIT, self.store.pool_timeout)):
                await self._read()
        except Exception:  # noqa: BLE001, S110 - nothing was waiting for it (and redis-py closed the connection)
            pass

    async def _read(self) -> Any:
        connection, self.connection = self.connection, None
        try:
            return await connection.read_response()
        finally:
            await self.store.client.connection_pool.release(connection)


_DRAIN_WAIT = 0.02
"""Seconds a dropped early read waits for its answer before its connection is closed instead."""
