"""Copying entries between stores: `copy_entries` / `copy_entries_sync`.

Promote answers recorded in production (Redis) into fixtures, or warm a cache from fixtures.
"""

from __future__ import annotations

import asyncio
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
    prefix = f"{resolve_namespace(namespace)}:{KEY_VERSION}:" + (f"{task_name}:" if task_name is not None else "")
    keys = await source.keys(prefix)
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def copy(key: str) -> bool:
        async with limit:
            data = await source.get(key)
            if data is None:
                return False
            await target.set(key, data, seconds)
            return True

    return sum(await asyncio.gather(*(copy(key) for key in keys)))


def copy_entries_sync(source: Store, target: Store, **kwargs: Any) -> int:
    """Blocking `copy_entries`, same arguments."""
    return _portal.run(copy_entries(source, target, **kwargs))
