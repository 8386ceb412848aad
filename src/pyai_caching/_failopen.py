"""Fail open: a store that breaks costs a bounded delay and one log line, never a run."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .exceptions import CacheError
from .stores import Store
from .stores._base import PendingGet

__all__ = ("EarlyRead", "FailOpen")

logger = logging.getLogger("pyai_caching")
T = TypeVar("T")
_FAILED: object = object()


@dataclass
class _Breaker:
    """After a failure, operations are skipped for `cooldown` seconds (a circuit breaker), so while a store is
    down each run pays at most one timeout per cooldown, not one per operation. One warning when it starts
    failing, one when it recovers."""

    kind: str
    """"reads", "writes" or "counters"; "" for the store as a whole."""
    clock: Callable[[], float]
    cooldown: float
    open_until: float = 0.0
    failed_at: float = float("-inf")
    down: bool = False

    @property
    def available(self) -> bool:
        return self.clock() >= self.open_until

    def failed(self, exc: Exception) -> None:
        self.failed_at = self.clock()
        self.open_until = self.failed_at + self.cooldown
        if self.down:
            return
        self.down = True
        if self.kind:
            logger.warning(
                "cache store refused %s, running without the cache for %s (retrying in %.0fs; entries it holds "
                "are still served): %s",
                self.kind,
                self.kind,
                self.cooldown,
                exc,
            )
        else:
            logger.warning("cache store failed, running without the cache (retrying in %.0fs): %s", self.cooldown, exc)

    def succeeded(self, started: float) -> None:
        if self.down and started >= self.failed_at:  # not an operation already in flight when it failed
            self.down = False
            logger.warning("cache store is reachable again%s", f" for {self.kind}" if self.kind else "")


@dataclass
class FailOpen:
    """Calls a store, turning failures into "no entry" / "not stored".

    A store that cannot be reached (refused connection, timeout) is skipped for every operation for `cooldown`
    seconds. A store that answers but refuses one kind of operation (`CacheError.refused`: Redis at `maxmemory`
    with `noeviction`, a read-only replica, a full disk) is skipped for that kind only, so it still serves the
    entries it holds.
    """

    store: Store
    cooldown: float = 5.0
    clock: Callable[[], float] = time.monotonic
    errors: int = 0
    """Failures seen (including skipped operations while a breaker was open)."""
    _all: _Breaker = field(init=False, repr=False)
    _kinds: dict[str, _Breaker] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        clock = lambda: self.clock()  # noqa: E731 - read at each use: the clock can be replaced (tests)
        self._all = _Breaker("", clock, self.cooldown)
        self._kinds = {kind: _Breaker(kind, clock, self.cooldown) for kind in ("reads", "writes", "counters")}

    @property
    def available(self) -> bool:
        """False while reads are switched off."""
        return self._all.available and self._kinds["reads"].available

    async def get(self, key: str) -> tuple[bytes | None, bool]:
        """The entry (or None) and whether the read failed."""
        data = await self._call("reads", lambda: self.store.get(key), _FAILED)
        return (None, True) if data is _FAILED else (data, False)  # type: ignore[return-value]

    async def start_get(self, key: str) -> EarlyRead | None:
        """A read of `key` sent now, its answer taken later (`Store.start_get`); None where the store cannot (or its
        reads are switched off: `get` then says so)."""
        if not self.available:
            return None
        pending = await self._call("reads", lambda: self.store.start_get(key), _FAILED)
        if pending is None:
            return None
        return EarlyRead(self, key, None if pending is _FAILED else pending)  # type: ignore[arg-type]

    async def get_including_expired(self, key: str) -> tuple[bytes | None, bool]:
        """As `get`, past the entry's TTL too where the store still holds it (`replay`)."""
        data = await self._call("reads", lambda: self.store.get_including_expired(key), _FAILED)
        return (None, True) if data is _FAILED else (data, False)  # type: ignore[return-value]

    async def set(self, key: str, value: bytes, ttl: float | None) -> bool:
        """True if the entry was stored."""
        return await self._call("writes", lambda: _true(self.store.set(key, value, ttl)), False)

    async def delete(self, key: str) -> bool:
        """True if the entry is gone (or was never there)."""
        return await self._call("writes", lambda: _true(self.store.delete(key)), False)

    async def claim_and_read(self, key: str, ttl: float) -> tuple[str | None, bytes | None, bool]:
        """`claim` and the entry read with it: (token or None, the entry or None, whether claims are in use)."""
        try:
            got = await self._call(
                "claims", lambda: self.store.claim_and_read(key, ttl), _FAILED, passthrough=NotImplementedError
            )
        except NotImplementedError:
            return None, None, False
        if got is _FAILED:
            return None, None, False
        token, data = got  # type: ignore[misc]
        return token, data, True

    async def set_and_release(self, key: str, value: bytes, ttl: float | None, token: str) -> bool:
        """Store the entry and release the claim; True if stored. The release is tried even when writes are off."""
        try:
            stored = await self._call(
                "writes", lambda: _true(self.store.set_and_release(key, value, ttl, token)), False
            )
        except BaseException:  # cancelled mid-write: the claim must not outlive us
            await asyncio.shield(self.release_claim(key, token))
            raise
        if not stored:
            await self.release_claim(key, token)  # (a release after a failed write is harmless if it already ran)
        return stored

    async def renew_claim(self, key: str, token: str, ttl: float) -> bool:
        """Always tried, even while claims are switched off: a held claim must not lapse because another failed."""
        try:
            return await self.store.renew_claim(key, token, ttl)
        except Exception as exc:  # noqa: BLE001 - the claim may lapse; the entry is still made and stored
            logger.debug("renewing the claim on %s failed: %s", key, exc)
            return False

    async def release_claim(self, key: str, token: str) -> None:
        """Always tried, even while claims are switched off: a claim left held makes its waiters wait it out."""
        try:
            await self.store.release_claim(key, token)
        except Exception as exc:  # noqa: BLE001 - it expires by itself
            logger.debug("releasing the claim on %s failed: %s", key, exc)

    async def wait_for_claim(self, key: str, timeout: float) -> bool:
        """False if waiting failed (the caller stops waiting and makes the entry itself)."""
        return await self._call("claims", lambda: _true(self.store.wait_for_claim(key, timeout)), False)

    async def add_counters(self, name: str, counters: Mapping[str, float]) -> bool:
        return await self._call("counters", lambda: _true(self.store.add_counters(name, counters)), False)

    async def _call(
        self, kind: str, op: Callable[[], Awaitable[T]], fallback: T, *, passthrough: type[Exception] | None = None
    ) -> T:
        # claims only save money: one failing never switches claims off for the next (a held claim's waiters
        # would then all pay), and they trip no breaker; a store that is down is skipped for them too
        transient = kind == "claims"
        own = None if transient else self._kinds[kind]
        if not (self._all.available and (own is None or own.available)):
            self.errors += 1
            return fallback
        started = self.clock()
        try:
            result = await op()
        except Exception as exc:  # noqa: BLE001 - any store failure (custom stores too) fails open
            if passthrough is not None and isinstance(exc, passthrough):
                raise
            self.errors += 1
            if own is None:
                logger.debug("claim on the store failed, making the entry without it: %s", exc)
            else:
                (own if isinstance(exc, CacheError) and exc.refused else self._all).failed(exc)
            return fallback
        self._all.succeeded(started)
        if own is not None:
            own.succeeded(started)
        return result


@dataclass(eq=False)
class EarlyRead:
    """A read of `key` already sent. Await exactly one of `result` (what `FailOpen.get` returns) or `discard`."""

    guarded: FailOpen
    key: str
    pending: PendingGet | None
    """None: sending it failed (counted): the read failed."""

    async def result(self) -> tuple[bytes | None, bool]:
        pending, self.pending = self.pending, None
        if pending is None:
            return None, True
        try:
            data = await self.guarded._call("reads", pending.result, _FAILED)  # pyright: ignore[reportPrivateUsage]
        finally:
            await pending.discard()  # (nothing left to drop once `result` read it; reads switched off meanwhile: this)
        return (None, True) if data is _FAILED else (data, False)  # type: ignore[return-value]

    async def discard(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            await pending.discard()


async def _true(awaitable: Awaitable[object]) -> bool:
    await awaitable
    return True
