"""Invalidation: `clear_cache` deletes only this library's entries (a namespace, a task, entries older than an
age) with SCAN + UNLINK on Redis and by files locally; `clear_entry` deletes the one entry a call would use."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

import pyai_caching
from pyai_caching import (
    LocalStore,
    MemoryStore,
    RedisStore,
    Store,
    cached_agent_run,
    clear_cache,
    clear_cache_async,
    clear_entry,
    clear_entry_sync,
    get_stats,
)

DIGEST = "0" * 64


def counting_agent(calls: list[str]) -> Agent[None, str]:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append("x")
        return ModelResponse(parts=[TextPart(f"answer {len(calls)}")])

    return Agent(FunctionModel(respond, model_name="gpt-4o-mini"))


async def fill(store: Store, agent: Agent[None, str]) -> None:
    for task, prompt in (("faq", "a"), ("faq", "b"), ("chat", "c")):
        await cached_agent_run(agent, prompt, task, store=store)
    await cached_agent_run(agent, "other namespace", "faq", store=store, namespace="otherapp")


@pytest.fixture(params=["memory", "local", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        backend: Store = MemoryStore()
    elif request.param == "local":
        backend = LocalStore(tmp_path / "cache")
    else:
        backend = RedisStore.from_url(request.getfixturevalue("redis_url"))
    yield backend
    await backend.aclose()


async def test_clear_a_task_then_the_namespace_leaving_counters_and_other_namespaces(store: Store) -> None:
    calls: list[str] = []
    agent = counting_agent(calls)
    await fill(store, agent)
    assert await clear_cache_async(store=store, task_name="faq") == 2
    assert (await cached_agent_run(agent, "c", "chat", store=store)).cached  # another task: kept
    assert not (await cached_agent_run(agent, "a", "faq", store=store)).cached  # cleared: asked again
    assert await clear_cache_async(store=store) == 2  # "a" again, and "c"
    assert await clear_cache_async(store=store) == 0
    assert (await cached_agent_run(agent, "other namespace", "faq", store=store, namespace="otherapp")).cached
    stats = await get_stats(store=store)
    assert stats.total.hits == 1 and stats.total.misses == 4  # counters untouched by clearing (a, b, c, a again)


async def test_clear_entries_older_than_an_age(store: Store) -> None:
    agent = counting_agent([])
    old = (await cached_agent_run(agent, "old", "faq", store=store)).cache_key
    new = (await cached_agent_run(agent, "new", "faq", store=store)).cache_key
    data = json.loads((await store.get(old)) or b"")
    data["created"] -= 13 * 3600
    await store.set(old, json.dumps(data).encode(), None)
    assert await clear_cache_async(store=store, older_than=timedelta(hours=12)) == 1
    assert await store.get(old) is None and await store.get(new) is not None
    assert await clear_cache_async(store=store, older_than=0) == 1


@pytest.mark.redis_server
async def test_redis_clearing_uses_scan_and_unlink_and_touches_nothing_else(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    store = RedisStore.from_url(redis_url)
    try:
        for i in range(1200):
            await store.set(f"pyai_caching:v2:bulk:{i:064x}", b'{"created": 1.0}', 600)
        await store.set(f"pyai_caching:v1:bulk:{DIGEST}", b"an entry of an older key version", 600)
        admin.set("someone_else:key", "x")
        admin.set("pyai_caching:config", "not an entry")  # under our prefix, but not our key shape
        admin.hset("pyai_caching:stats:bulk", "hits", 3)
        admin.config_resetstat()
        assert await clear_cache_async(store=store, task_name="bulk") == 1201
        commands = admin.info("commandstats")
        assert "cmdstat_unlink" in commands and "cmdstat_scan" in commands
        assert not {"cmdstat_keys", "cmdstat_flushdb", "cmdstat_flushall", "cmdstat_del"} & set(commands)
        assert admin.get("someone_else:key") == b"x" and admin.get("pyai_caching:config") == b"not an entry"
        assert admin.hget("pyai_caching:stats:bulk", "hits") == b"3"
        assert admin.dbsize() == 3
    finally:
        await store.aclose()
        admin.close()


async def test_clear_entry_deletes_the_one_entry_a_call_would_use() -> None:
    store, calls = MemoryStore(), []
    agent = counting_agent(calls)
    await cached_agent_run(agent, "a", "faq", store=store, model_settings={"temperature": 0.0})
    await cached_agent_run(agent, "a", "faq", store=store, model_settings={"temperature": 0.9})
    assert await clear_entry(agent, "a", "faq", store=store, model_settings={"temperature": 0.9}, ttl=5) is True
    assert await clear_entry(agent, "a", "faq", store=store, model_settings={"temperature": 0.9}) is False
    assert (await cached_agent_run(agent, "a", "faq", store=store, model_settings={"temperature": 0.0})).cached
    assert not (await cached_agent_run(agent, "a", "faq", store=store, model_settings={"temperature": 0.9})).cached


def test_sync_forms_bad_arguments_and_the_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "cache"))
    agent = counting_agent([])
    from pyai_caching import cached_agent_run_sync

    cached_agent_run_sync(agent, "a", "faq")
    assert clear_entry_sync(agent, "a", "faq") is True
    cached_agent_run_sync(agent, "b", "faq")
    assert clear_cache(task_name="faq") == 1
    with pytest.raises(ValueError, match="task_name"):
        clear_cache(task_name="two words")
    with pytest.raises(ValueError, match="older_than"):
        clear_cache(older_than=-1)
    with pytest.raises(TypeError, match="older_than"):
        clear_cache(older_than="12h")  # type: ignore[arg-type]
    assert isinstance(pyai_caching.__version__, str) and pyai_caching.__version__[0].isdigit()


async def test_a_store_named_explicitly_is_cleared_even_inside_the_plugins_scope(tmp_path: Path) -> None:
    from pyai_caching import FixtureStore
    from pyai_caching._scope import scoped

    recordings, own = FixtureStore(tmp_path / "recordings"), MemoryStore()
    agent = counting_agent([])
    with scoped(recordings, "read_write"):
        await cached_agent_run(agent, "q", "faq")  # recorded into the fixtures
        await own.set(f"pyai_caching:v2:faq:{DIGEST}", b"{}", None)
        assert await clear_cache_async(store=own) == 1
        assert len(await recordings.keys("")) == 1  # the recordings are untouched
        assert await clear_cache_async() == 1  # no store named: the scope's
