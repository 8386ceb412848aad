"""Single-flight across processes: one caller, in any process sharing the store, makes a missing entry.

The in-process flights of `_engine` collapse concurrent misses within one event loop; this collapses
the leaders of several processes. The first one claims the key in the store (Redis: a lock with a
random token and an expiry, renewed while the model works; the local store: a file lock) and makes
the entry; the others wait for the claim to be released (Redis: a pub/sub message, no busy polling)
and read the entry. A holder that dies stops renewing, its claim expires, and a waiter takes over.
Every claim error fails open: the caller then makes the entry itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ._failopen import FailOpen

__all__ = ("CLAIM_TTL", "Claim", "Held", "claim", "claim_ttl", "holding")

logger = logging.getLogger("pyai_caching")

CLAIM_TTL = 15.0
"""Seconds a claim lives without renewal, unless the store says otherwise (`claim_ttl`); renewed every third of
it while the entry is being made."""


_MAX_WAIT_TTLS = 20
"""A waiter gives up after this many claim lifetimes (5 minutes by default) and makes the entry itself."""


def claim_ttl(guarded: FailOpen) -> float:
    return float(getattr(guarded.store, "claim_ttl", CLAIM_TTL))


@dataclass(frozen=True, slots=True)
class Claim:
    """What `claim` got: the right to make the entry (`token`; None when the store has no claims or they failed:
    make it anyway), or the entry another process made meanwhile (`found`)."""

    token: str | None = None
    found: bytes | None = None


async def claim(guarded: FailOpen, key: str, ttl: float, *, ignore: bytes | None = None) -> Claim:
    """Claim `key` across processes, or wait for whoever holds it and return what it stored (other than `ignore`:
    bytes already found unreadable)."""
    deadline = time.monotonic() + _MAX_WAIT_TTLS * ttl
    while True:
        if time.monotonic() >= deadline:  # a holder that neither finishes nor dies: stop waiting, make it
            logger.warning("waited %.0fs for another process to make %s: making it here", _MAX_WAIT_TTLS * ttl, key)
            return Claim()
        # the entry is read with the claim: it may have been stored (and the claim released) since our first read
        token, data, supported = await guarded.claim_and_read(key, ttl)
        if not supported:
            return Claim()
        fresh = data is not None and data != ignore
        if token is not None:
            if not fresh:
                return Claim(token=token)
            await guarded.release_claim(key, token)
            return Claim(found=data)
        if fresh:
            return Claim(found=data)
        if not await guarded.wait_for_claim(key, min(ttl, deadline - time.monotonic())):
            return Claim()
        data, _ = await guarded.get(key)
        if data is not None and data != ignore:
            return Claim(found=data)
        # released (or expired) without an entry: its holder failed or died; claim it ourselves


@dataclass(slots=True)
class Held:
    """A claim being held: `store` writes the entry and releases the claim together (one round trip)."""

    guarded: FailOpen
    key: str
    token: str | None
    released: bool = False

    async def store(self, value: bytes, ttl: float | None) -> bool:
        if self.token is None or self.released:
            return await self.guarded.set(self.key, value, ttl)
        stored = await self.guarded.set_and_release(self.key, value, ttl, self.token)
        self.released = True  # only once it ran: a cancelled write leaves the release to `holding`
        return stored


@contextlib.asynccontextmanager
async def holding(guarded: FailOpen, key: str, token: str | None, ttl: float) -> AsyncIterator[Held]:
    """Keep a claim alive while the block makes and stores the entry (`Held.store`), then release it if the block
    did not (waking the waiters)."""
    held = Held(guarded, key, token)
    if token is None:
        yield held
        return
    renewal = _Renewal(guarded, key, token, ttl)
    try:
        yield held
    finally:
        await renewal.stop()
        if not held.released:
            await asyncio.shield(guarded.release_claim(key, token))


@dataclass(eq=False)
class _Renewal:
    """Renews a held claim every third of its TTL. A timer until the first renewal is due (most entries are made
    sooner, and a timer costs far less than a task), then a task."""

    guarded: FailOpen
    key: str
    token: str
    ttl: float
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle = field(init=False)

    def __post_init__(self) -> None:
        self.timer = asyncio.get_running_loop().call_later(self.ttl / 3, self._due)

    def _due(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        while await self.guarded.renew_claim(self.key, self.token, self.ttl):
            await asyncio.sleep(self.ttl / 3)
        logger.warning("lost the claim on %s while making it: another process may make it too", self.key)

    async def stop(self) -> None:
        self.timer.cancel()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
