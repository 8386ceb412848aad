"""Reading the counters back: `get_stats` / `get_stats_sync`."""

from __future__ import annotations

from typing import Any

from . import _portal
from ._config import check_task_name, resolve_namespace, resolve_store_spec
from ._registry import loop_state
from .stats import StatsReport, stats_group, stats_prefix
from .stores import Store

__all__ = ("get_stats", "get_stats_sync", "flush")


async def flush() -> None:
    """Finish what this event loop still has pending: answers being stored, and buffered counters.

    A miss returns as soon as the model has answered; its entry is written right after (~1 ms), and
    counters are batched for ~0.5 s off the hit path. Closing a store (`await store.aclose()`) and
    the end of an `asyncio.run` finish them too; call this to be sure, e.g. before reading the store
    directly or before a process exits some other way.
    """
    await (await loop_state()).flush()


async def get_stats(
    task_name: str | None = None,
    *,
    redis_url: str | None = None,
    store: Store | None = None,
    namespace: str | None = None,
) -> StatsReport:
    """Hits, misses, errors, spend and savings per task and in total, from the store.

    Counters from every process sharing the store add up. This process's own recent counters
    are written first, so the report includes them.

    Raises:
        ValueError: `task_name` is not a valid task name.
        ConfigurationError: no store is configured.
        CacheError: the store cannot be read.
    """
    if task_name is not None:
        check_task_name(task_name)
    namespace = resolve_namespace(namespace)
    spec = None if store is not None else resolve_store_spec(redis_url)
    state = await loop_state()
    cache = state.cache_for(spec, store)
    await state.flush()
    prefix = stats_group(namespace, task_name) if task_name is not None else stats_prefix(namespace)
    groups = await cache.guarded.store.get_counters(prefix)
    if task_name is not None:
        groups = {name: counters for name, counters in groups.items() if name == prefix}
    return StatsReport.from_groups(namespace, groups)


def get_stats_sync(task_name: str | None = None, **kwargs: Any) -> StatsReport:
    """Blocking `get_stats`, same arguments (includes the counters of `cached_agent_run_sync` calls)."""
    return _portal.run(get_stats(task_name, **kwargs))
