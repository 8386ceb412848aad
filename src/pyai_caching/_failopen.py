"""Fail open: a store that breaks costs a bounded delay and one log line, never a run."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .stores import Store

__all__ = ("FailOpen",)

logger = logging.getLogger("pyai_caching")
T = TypeVar("T")
_FAILED: object = object()


@dataclass
class FailOpen:
    """Calls a store, turning failures into "no entry" / "not stored".

    After a failure the store is skipped for `cooldown` seconds (a circuit breaker), so while a
    store is down each run pays at most one timeout per cooldown, not one per operation. One
    warning is logged when the store starts failing and one when it recovers.
    """

    store: Store
    cooldown: float = 5.0
    clock: Callable[[], float] = time.monotonic
    errors: int = 0
    """Failures seen (including skipped operations while the breaker was open)."""
    _open_until: float = field(default=0.0, repr=False)
    _failed_at: float = field(default=float("-inf"), repr=False)
    _down: bool = field(default=False, repr=False)

    @property
    def available(self) -> bool:
        """False while the breaker is open."""
        return self.clock() >= self._open_until

    async def get(self, key: str) -> tuple[bytes | None, bool]:
        """The entry (or None) and whether the read failed."""
        data = await self._call("read", lambda: self.store.get(key), _FAILED)
        # not `self.errors` before/after: other operations may fail while this one is awaited
        return (None, True) if data is _FAILED else (data, False)  # type: ignore[return-value]

    async def set(self, key: str, value: bytes, ttl: float | None) -> bool:
        """True if the entry was stored."""
        return await self._call("write", lambda: _true(self.store.set(key, value, ttl)), False)

    async def add_counters(self, name: str, counters: Mapping[str, float]) -> bool:
        return await self._call("counter update", lambda: _true(self.store.add_counters(name, counters)), False)

    async def _call(self, what: str, op: Callable[[], Awaitable[T]], fallback: T) -> T:
        if not self.available:
            self.errors += 1
            return fallback
        started = self.clock()
        try:
            result = await op()
        except Exception as exc:  # noqa: BLE001 - any store failure (custom stores too) fails open
            self.errors += 1
            self._failed_at = self.clock()
            self._open_until = self._failed_at + self.cooldown
            if not self._down:
                self._down = True
                logger.warning(
                    "cache store %s failed, running without the cache (retrying in %.0fs): %s",
                    what,
                    self.cooldown,
                    exc,
                )
            return fallback
        if self._down and started >= self._failed_at:  # not an operation already in flight when it failed
            self._down = False
            logger.warning("cache store is reachable again")
        return result


async def _true(awaitable: Awaitable[object]) -> bool:
    await awaitable
    return True
