"""Copying entries between stores: `copy_entries` / `copy_entries_sync`.

Promote answers recorded in production (Redis) into fixtures, or warm a cache from fixtures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from . import _portal
from ._config import check_task_name, resolve_namespace, resolve_ttl
from ._keys import KEY_VERSION
from .stores import Store

__all__ = ("copy_entries", "copy_entries_sync")

_CONCURRENCY = 16


async def copy_entries(
    source: Store,
    target: Store,
    *,
    task_name: str | None = None,
    namespace: str | None = None,
    ttl: float | timedelta | None = None,
) -> int:
    """Copy the entries of a namespace (or of one task) from `source` to `target`, byte for byte, under the
    same keys. Counters are not copied; entries of older key versions (which no call reads) are left behind.

    Args:
        task_name: Copy only this task's entries.
        namespace: Defaults to `LLM_CACHE_NAMESPACE` or `pyai_caching`.
        ttl: Lifetime of the copies; defaults to `LLM_CACHE_TTL` or 15 days (a `FixtureStore` keeps them for good).

    Returns:
        How many entries were copied (an entry that expired while copying is skipped).

    Raises:
        TypeError | ValueError: bad arguments.
        CacheError: either store failed (unlike a run, a copy does not fail open).
        NotImplementedError: `source` cannot list its entries.
    """
    for name, store in (("source", source), ("target", target)):
        if not isinstance(store, Store):
            raise TypeError(f"{name} must be a pyai_caching Store, not {type(store).__name__}")
    if source is target:
        raise ValueError("source and target are the same store")
    if task_name is not None:
        check_task_name(task_name)
    seconds = resolve_ttl(ttl)
    keys = await source.keys(current_prefix(resolve_namespace(namespace), task_name))
    return await copy_keys(source, target, keys, seconds)


def current_prefix(namespace: str, task_name: str | None) -> str:
    """The keys calls read today: the current key version, of one task or of all."""
    return f"{namespace}:{KEY_VERSION}:" + (f"{task_name}:" if task_name is not None else "")


async def copy_keys(
    source: Store,
    target: Store,
    keys: list[str],
    ttl: float | None,
    advance: Callable[[], None] | None = None,
) -> int:
    """Copy the entries under `keys` byte for byte (calling `advance` after each); how many were copied."""
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def copy(key: str) -> bool:
        async with limit:
            data = await source.get(key)  # an entry that expired meanwhile is skipped
            if data is not None:
                await target.set(key, data, ttl)
        if advance is not None:
            advance()
        return data is not None

    return sum(await asyncio.gather(*(copy(key) for key in keys)))


def copy_entries_sync(source: Store, target: Store, **kwargs: Any) -> int:
    """Blocking `copy_entries`, same arguments."""
    return _portal.run(copy_entries(source, target, **kwargs))
