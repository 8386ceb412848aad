"""Per-event-loop state: open stores, their stats buffers and in-flight misses.

Redis clients are bound to the loop that created them, so every loop gets its own. They are
closed when the loop shuts down (`asyncio.run` finalizes async generators; one of ours is
parked on each loop for exactly that), so no client outlives its loop or leaks a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from ._config import StoreSpec
from ._failopen import FailOpen
from .stats import StatsBuffer
from .stores import LocalStore, RedisStore, Store

__all__ = ("Cache", "LoopState", "loop_state")


@dataclass
class Cache:
    """One store as the front door uses it: fail-open access plus its stats buffer."""

    guarded: FailOpen
    stats: StatsBuffer
    owned: bool


@dataclass
class LoopState:
    caches: dict[Any, Cache] = field(default_factory=dict)
    flights: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    closer: AsyncGenerator[None, None] | None = None

    def cache_for(self, spec: StoreSpec | None, store: Store | None) -> Cache:
        """The cache for a configured spec or a caller's store, opened on first use."""
        ident: Any = ("store", id(store)) if store is not None else spec
        cache = self.caches.get(ident)
        if cache is None:
            owned = store is None
            backend = store if store is not None else _open(spec)
            guarded = FailOpen(backend)
            cache = Cache(guarded=guarded, stats=StatsBuffer(guarded), owned=owned)
            self.caches[ident] = cache
        return cache

    async def aclose(self) -> None:
        """Flush counters of every cache and close the stores this state opened."""
        caches, self.caches = list(self.caches.values()), {}
        for cache in caches:
            with contextlib.suppress(Exception):
                await cache.stats.flush()
            if cache.owned:
                with contextlib.suppress(Exception):
                    await cache.guarded.store.aclose()


def _open(spec: StoreSpec | None) -> Store:
    assert spec is not None
    if spec.kind == "redis":
        return RedisStore.from_url(spec.location)
    return LocalStore(spec.location)  # type: ignore[arg-type]


_states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = weakref.WeakKeyDictionary()


async def loop_state() -> LoopState:
    """The state of the running loop, created (with its shutdown hook) on first use."""
    loop = asyncio.get_running_loop()
    state = _states.get(loop)
    if state is None:
        state = _states[loop] = LoopState()
        state.closer = _close_on_shutdown(state)
        await state.closer.__anext__()  # parked: the loop's asyncgen hooks now know it
    return state


async def _close_on_shutdown(state: LoopState) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await state.aclose()
