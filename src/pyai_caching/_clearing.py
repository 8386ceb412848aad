"""Invalidation: `clear_cache` (the whole namespace, one task, entries older than an age) and `clear_entry`
(the one entry a given call would use). Only this library's entries are deleted; counters and
everything else in the store are left as they are.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic_ai import messages as _messages
from pydantic_ai.agent import AbstractAgent

from . import _portal
from ._config import check_task_name, resolve_namespace, resolve_store_spec
from ._registry import loop_state
from ._scope import active_scope
from .stores import Store

__all__ = ("clear_cache", "clear_cache_async", "clear_entry", "clear_entry_sync", "matching_keys")

_ENTRY_KEY = re.compile(r"^(?P<ns>[^:\s]+):v\d+:(?P<task>[^:]+):[0-9a-f]{64}$")
_CREATED = re.compile(rb'"created":\s*(-?[0-9.eE+-]+)')


async def clear_cache_async(
    redis_url: str | None = None,
    *,
    task_name: str | None = None,
    older_than: timedelta | float | None = None,
    store: Store | None = None,
    namespace: str | None = None,
) -> int:
    """Delete this library's entries: the whole namespace, one task's, and/or those older than `older_than`.

    On Redis it lists keys with `SCAN` and deletes them with `UNLINK` in batches (never `KEYS`, `FLUSHDB` or
    `FLUSHALL`); on a directory store it removes files. Entries of every key version are ours; counters and
    other keys are left alone.

    Args:
        redis_url: As for `cached_agent_run` (else `LLM_CACHE_REDIS_URL`, then `LLM_CACHE_DIR`).
        task_name: Only this task's entries.
        older_than: Only entries written more than this long ago (a `timedelta` or seconds).
        store: A `Store` instead of the configured one.
        namespace: Defaults to `LLM_CACHE_NAMESPACE` or `pyai_caching`.

    Returns:
        How many entries were deleted.

    Raises:
        ConfigurationError | ValueError | TypeError: bad arguments or no store configured.
        CacheError: the store failed (unlike a run, invalidation does not fail open).
    """
    if task_name is not None:
        check_task_name(task_name)
    max_age = _seconds(older_than)
    namespace = resolve_namespace(namespace)
    target = await _store(redis_url, store)
    keys = await matching_keys(target, namespace, task_name=task_name, older_than=max_age)
    return await target.delete_many(keys) if keys else 0


def clear_cache(redis_url: str | None = None, **kwargs: Any) -> int:
    """Blocking `clear_cache_async`, same arguments."""
    return _portal.run(clear_cache_async(redis_url, **kwargs))


async def matching_keys(
    store: Store, namespace: str, *, task_name: str | None = None, older_than: float | None = None
) -> list[str]:
    """The entry keys of `namespace` (one task's, older than `older_than` seconds) in `store`."""
    keys = [k for k in await store.keys(f"{namespace}:") if (m := _ENTRY_KEY.match(k)) and m["ns"] == namespace]
    if task_name is not None:
        keys = [k for k in keys if k.split(":")[2] == task_name]
    if older_than is None:
        return keys
    cutoff = time.time() - older_than
    limit = asyncio.Semaphore(16)

    async def is_old(key: str) -> bool:
        async with limit:
            created = _created(await store.get_including_expired(key))
        return created is not None and created < cutoff  # an entry without a readable age is kept

    flags = await asyncio.gather(*(is_old(key) for key in keys))
    return [key for key, old in zip(keys, flags) if old]


async def clear_entry(
    agent: AbstractAgent[Any, Any],
    prompt: str | Sequence[_messages.UserContent] | None,
    task_name: str,
    *,
    message_history: Sequence[Any] | None = None,
    redis_url: str | None = None,
    store: Store | None = None,
    namespace: str | None = None,
    key_extra: Any = None,
    **agent_run_kwargs: Any,
) -> bool:
    """Delete the one entry `cached_agent_run` with the same arguments would use; True if there was one.

    Arguments that do not change the key (`ttl`, `max_wait`, `mode`, ...) are accepted and ignored.

    Raises:
        ConfigurationError | ValueError | TypeError: as `cached_agent_run` for the same arguments.
        UnkeyableError: the call cannot be keyed (it is never cached, so there is nothing to delete).
        CacheError: the store failed.
    """
    from ._call import RunCall  # noqa: PLC0415 - the front door's call, imported where used (it imports much)

    call = RunCall.for_lookup(
        agent, prompt, task_name, message_history=message_history, key_extra=key_extra, run_kwargs=agent_run_kwargs
    )
    key = call.key(resolve_namespace(namespace))
    target = await _store(redis_url, store)
    return bool(await target.delete_many([key]))


def clear_entry_sync(
    agent: AbstractAgent[Any, Any], prompt: str | Sequence[_messages.UserContent] | None, task_name: str, **kwargs: Any
) -> bool:
    """Blocking `clear_entry`, same arguments."""
    return _portal.run(clear_entry(agent, prompt, task_name, **kwargs))


async def _store(redis_url: str | None, store: Store | None) -> Store:
    """The store named by the arguments, else the pytest plugin's recordings (in a test using `llm_cache`), else
    the configured one: deleting is never redirected away from the store a caller names."""
    scope = active_scope()
    if scope is not None and store is None and redis_url is None:
        return scope.store
    if store is not None:
        if not isinstance(store, Store):
            raise TypeError(f"store must be a pyai_caching Store, not {type(store).__name__}")
        return store
    spec = resolve_store_spec(redis_url)
    return (await loop_state()).cache_for(spec, None).guarded.store


def _seconds(older_than: timedelta | float | None) -> float | None:
    if older_than is None:
        return None
    if isinstance(older_than, timedelta):
        seconds = older_than.total_seconds()
    elif isinstance(older_than, (int, float)) and not isinstance(older_than, bool):
        seconds = float(older_than)
    else:
        raise TypeError(f"older_than must be a timedelta or seconds, not {type(older_than).__name__}")
    if not seconds >= 0:
        raise ValueError(f"older_than must be >= 0, got {older_than!r}")
    return seconds


def _created(data: bytes | None) -> float | None:
    """When an entry was written (its envelope's `created`), read without parsing the whole entry."""
    if data is None:
        return None
    match = _CREATED.search(data, 0, 4096)
    if match is None:  # written by a version without it near the start, or not an entry: parse it all
        try:
            value = json.loads(data).get("created")
        except (ValueError, AttributeError):
            return None
        return float(value) if isinstance(value, (int, float)) else None
    try:
        return float(match.group(1))
    except ValueError:
        return None
