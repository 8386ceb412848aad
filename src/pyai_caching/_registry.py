"""Per-event-loop state: open stores, their stats buffers and in-flight misses.

Redis clients are bound to the loop that created them, so every loop gets its own. They are
closed when the loop shuts down (`asyncio.run` finalizes async generators; one of ours is
parked on each loop for exactly that), so no client outlives its loop or leaks a connection.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from . import _portal
from ._config import StoreSpec
from ._failopen import FailOpen
from .stats import StatsBuffer
from .stores import LocalStore, RedisStore, Store

__all__ = ("Cache", "LoopState", "loop_state")


@dataclass(eq=False)
class Cache:
    """One store as the front door uses it: fail-open access plus its stats buffer."""

    guarded: FailOpen
    stats: StatsBuffer


@dataclass
class LoopState:
    owned: dict[StoreSpec, Cache] = field(default_factory=dict)
    """Stores opened from configuration: this state closes them."""
    borrowed: weakref.WeakSet[Cache] = field(default_factory=weakref.WeakSet)
    """Caches of stores callers passed in: they live on the store, so a dropped store is released."""
    flights: dict[Any, Any] = field(default_factory=dict)
    """Misses in flight by (cache, key) (`_engine._Flight`)."""
    closer: AsyncGenerator[None, None] | None = None

    def cache_for(self, spec: StoreSpec | None, store: Store | None) -> Cache:
        """The cache for a configured spec or a caller's store, opened on first use."""
        if store is None:
            assert spec is not None
            cache = self.owned.get(spec)
            if cache is None:
                cache = self.owned[spec] = _cache(_open(spec))
            return cache
        per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Cache] | None = store.__dict__.get("_pyai_caches")
        if per_loop is None:
            per_loop = store.__dict__["_pyai_caches"] = weakref.WeakKeyDictionary()
            store._add_close_hook(functools.partial(_flush_current_loop, per_loop))  # pyright: ignore[reportPrivateUsage]
        loop = asyncio.get_running_loop()
        cache = per_loop.get(loop)
        if cache is None:
            cache = per_loop[loop] = _cache(store)
            self.borrowed.add(cache)
        return cache

    async def flush(self) -> None:
        """Wait for answers being stored, then write the buffered counters of every cache on this loop (and the
        counters stranded on loops that closed without shutting down)."""
        _adopt_stranded(self)
        # shielded: cancelling a flush must not cancel the model calls and writes it waits for
        writes = [asyncio.shield(flight.task) for flight in self.flights.values()]
        if writes:
            await asyncio.gather(*writes, return_exceptions=True)
        for cache in [*self.owned.values(), *self.borrowed]:
            with contextlib.suppress(Exception):
                await cache.stats.flush()

    async def aclose(self) -> None:
        """Flush counters of every cache and close the stores this state opened."""
        await self.flush()
        owned, self.owned = list(self.owned.values()), {}
        for cache in owned:
            with contextlib.suppress(Exception):
                await cache.guarded.store.aclose()


async def _flush_current_loop(per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Cache]) -> None:
    """Before a caller's store closes: write its counters buffered on this loop (other loops flush on shutdown)."""
    cache = per_loop.get(asyncio.get_running_loop())
    if cache is not None:
        await cache.stats.flush()


def _cache(store: Store) -> Cache:
    guarded = FailOpen(store)
    return Cache(guarded=guarded, stats=StatsBuffer(guarded))


def _open(spec: StoreSpec) -> Store:
    if spec.kind == "redis":
        return RedisStore.from_url(spec.location)
    return LocalStore(spec.location)  # type: ignore[arg-type]


_states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = weakref.WeakKeyDictionary()


async def loop_state() -> LoopState:
    """The state of the running loop, created (with its shutdown hook) on first use."""
    loop = asyncio.get_running_loop()
    last = _last
    if last is not None and last[0]() is loop:  # the common case: the loop of the previous call
        return last[1]
    state = _states.get(loop)
    if state is not None:
        _remember(loop, state)
    else:
        state = _states[loop] = LoopState()
        state.closer = _close_on_shutdown(state)
        await state.closer.__anext__()  # parked: the loop's asyncgen hooks now know it
        _adopt_stranded(state)
        _remember(loop, state)
    return state


_last: tuple[weakref.ref[asyncio.AbstractEventLoop], LoopState] | None = None


def _remember(loop: asyncio.AbstractEventLoop, state: LoopState) -> None:
    global _last
    _last = (weakref.ref(loop), state)


def _forget(state: LoopState | None) -> None:
    """A loop's state is gone (the loop shut down): the next call on that loop, if any, makes a new one."""
    global _last
    if _last is not None and _last[1] is state:
        _last = None


def _adopt_stranded(state: LoopState, *, at_exit: bool = False) -> None:
    """Move counters buffered on loops that were closed without shutting down (`run_until_complete` then
    `close()`, as Celery and thread-owned loops do; at exit, also loops no longer running) to `state`."""
    for loop, other in list(_states.items()):
        if other is state or not (loop.is_closed() or (at_exit and not loop.is_running())):
            continue
        for spec, cache in list(other.owned.items()):
            cache.stats.move_to(state.cache_for(spec, None).stats)
        for cache in list(other.borrowed):
            cache.stats.move_to(state.cache_for(None, cache.guarded.store).stats)
        if loop.is_closed():
            _forget(_states.pop(loop, None))


def _has_stranded_counters() -> bool:
    return any(
        cache.stats.pending and not loop.is_running()
        for loop, state in list(_states.items())
        for cache in [*state.owned.values(), *state.borrowed]
    )


async def _write_stranded() -> None:
    state = await loop_state()
    _adopt_stranded(state, at_exit=True)
    await state.aclose()


@atexit.register
def _write_stranded_at_exit() -> None:
    """At interpreter exit, write counters no loop is left to write."""
    if _has_stranded_counters():
        with contextlib.suppress(Exception):
            asyncio.run(_write_stranded())


async def _close_on_shutdown(state: LoopState) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await state.aclose()
        _states.pop(asyncio.get_running_loop(), None)  # the generator holds its loop: let both go
        _forget(state)
        state.closer = None


async def _finish_pending() -> None:
    """Before the background loop stops: let misses still in flight (their callers were interrupted) finish and
    be stored, then write the buffered counters. A stopped loop would freeze a paid model call mid-request."""
    state = _states.get(asyncio.get_running_loop())
    if state is not None:
        await state.flush()


_portal.add_idle_hook(_finish_pending)
