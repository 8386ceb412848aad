"""Read your writes, and the store problems that remain: refused writes, loops closed directly, and sync calls
that leave the agent usable on other event loops."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import (
    MemoryStore,
    cached_agent_run,
    get_stats,
    get_stats_sync,
)


def counting_agent(calls: list[str], delay: float = 0.0) -> Agent[None, str]:
    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        prompt = str(messages[-1].parts[-1].content)  # type: ignore[union-attr]
        calls.append(prompt)
        await asyncio.sleep(delay)
        return ModelResponse(parts=[TextPart(f"answer to {prompt}")])

    return Agent(FunctionModel(respond, model_name="test-llm"))


class SlowReads(MemoryStore):
    """A store whose reads answer late with what was there when they arrived (a loaded replica, a far region)."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        value = await super().get(key)
        await asyncio.sleep(0.02)
        return value


# ----------------------------------------------------------------- read your writes


async def test_a_call_right_after_a_miss_hits_even_when_reads_are_slower_than_writes() -> None:
    store, calls = SlowReads(), []
    agent = counting_agent(calls)
    for i in range(20):
        first = await cached_agent_run(agent, f"q{i}", "ryw", store=store)
        second = await cached_agent_run(agent, f"q{i}", "ryw", store=store)
        assert not first.cached and second.cached
    assert len(calls) == 20


async def test_a_call_in_flight_is_found_before_the_store_is_read() -> None:
    store, calls = SlowReads(), []
    agent = counting_agent(calls, delay=0.1)
    leader = asyncio.create_task(cached_agent_run(agent, "q", "inflight", store=store))
    await asyncio.sleep(0.05)  # the model is working
    follower = await cached_agent_run(agent, "q", "inflight", store=store)
    assert follower.cached and (await leader).cached is False
    assert calls == ["q"] and store.gets == 1  # the follower never read the store


@pytest.mark.redis_server
async def test_another_client_reads_the_entry_as_soon_as_the_call_returns(redis_url: str, redis_server: Any) -> None:
    calls: list[str] = []
    agent = counting_agent(calls)
    with redis_server.client() as other:  # another process's connection
        for i in range(50):
            result = await cached_agent_run(agent, f"q{i}", "ryw", redis_url=redis_url)
            assert result.cache_key is not None and other.get(result.cache_key) is not None


# ----------------------------------------------------------------- refused writes keep reads


@pytest.fixture
def full_redis(redis_server: Any, redis_url: str) -> Iterator[redis.Redis]:
    """The real server; the test fills it to `maxmemory` with `noeviction` (writes refused, reads served)."""
    with redis_server.client() as admin:
        policy = admin.config_get("maxmemory-policy")["maxmemory-policy"]
        try:
            yield admin
        finally:
            admin.config_set("maxmemory", 0)
            admin.config_set("maxmemory-policy", policy)


@pytest.mark.redis_server
async def test_a_redis_refusing_writes_still_serves_its_entries(full_redis: redis.Redis, redis_url: str) -> None:
    calls: list[str] = []
    agent = counting_agent(calls)
    questions = [f"question {i}" for i in range(20)]
    for q in questions:
        await cached_agent_run(agent, q, "full", redis_url=redis_url)
    full_redis.config_set("maxmemory-policy", "noeviction")
    full_redis.config_set("maxmemory", 1)  # every write is now refused with OOM

    new = await cached_agent_run(agent, "a new question", "full", redis_url=redis_url)
    assert new.output == "answer to a new question" and not new.cached  # answered, not stored
    results = [await cached_agent_run(agent, q, "full", redis_url=redis_url) for q in questions]
    assert all(r.cached for r in results)
    assert len(calls) == 21


# ----------------------------------------------------------------- counters of a loop closed directly


def test_counters_survive_a_loop_closed_without_shutdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[str] = []
    agent = counting_agent(calls)
    caller_store = MemoryStore()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(cached_agent_run(agent, "q", "celery"))
        loop.run_until_complete(cached_agent_run(agent, "q", "celery"))
        loop.run_until_complete(cached_agent_run(agent, "q", "celery-mine", store=caller_store))
    finally:
        loop.close()  # no shutdown_asyncgens: the counters were still buffered
    stats = get_stats_sync("celery")
    assert (stats.total.hits, stats.total.misses) == (1, 1)
    mine = asyncio.run(get_stats("celery-mine", store=caller_store))
    assert mine.total.misses == 1


# ----------------------------------------------------------------- sync calls leave the agent usable elsewhere


def test_after_a_sync_call_the_agent_works_on_other_event_loops() -> None:
    script = Path(__file__).with_name("sync_loops_scenario.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_CACHE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(script.parent), *sys.path])
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "cached sync: echo: one",
        "run_sync: echo: two",
        "asyncio.run: echo: three",
        "cached sync again: echo: four",
        "asyncio.run again: echo: five",
        "cached sync hit: True",
    ]
