"""Proof under faults, against real redis-server processes: Redis killed and restarted in the middle of a stream of
calls, and values under our keys that are not our entries. Every call returns a correct answer."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import RedisStore, cached_agent_run

from faults_scenario import run_stream

pytestmark = pytest.mark.redis_server


async def test_redis_killed_and_restarted_in_a_stream_of_200_calls(redis_server: Any) -> None:
    stream = await run_stream(200, kill_at=50, restart_at=120, pause=0.05)  # ~12 s: past the 5 s breaker
    assert [c.output for c in stream.calls] == [f"answer to p{i % 20}" for i in range(200)]
    up = [c for c in stream.calls if c.phase == "up"]
    down = [c for c in stream.calls if c.phase == "down"]
    restarted = [c for c in stream.calls if c.phase == "restarted"]
    assert sum(c.cached for c in up) == 30  # 20 misses, then hits
    assert not any(c.cached for c in down)  # answered by the model while Redis was gone
    assert any(c.cached for c in restarted[-40:])  # caching resumed after the restart
    assert stream.model_calls == len(stream.calls) - sum(c.cached for c in stream.calls)


def echo_agent(calls: list[str]) -> Agent[None, str]:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append("x")
        return ModelResponse(parts=[TextPart("fresh")])

    return Agent(FunctionModel(respond, model_name="m"))


@pytest.mark.parametrize(
    "foreign",
    [
        lambda admin, key: admin.set(key, b'{"format": 1, "model": "m", "cost": 0.1, "run": {"messa'),  # truncated
        lambda admin, key: admin.set(key, b"\x80\x04\x95 pickled by someone else"),
        lambda admin, key: admin.hset(key, "field", "a hash, not a string"),
        lambda admin, key: admin.rpush(key, "a", "list"),
    ],
    ids=["truncated", "binary", "hash", "list"],
)
async def test_values_under_our_keys_that_are_not_our_entries_are_misses(redis_url: str, foreign: Any) -> None:
    calls: list[str] = []
    agent = echo_agent(calls)
    store = RedisStore.from_url(redis_url)
    admin = redis.Redis.from_url(redis_url)
    try:
        key = (await cached_agent_run(agent, "q", "foreign", store=store)).cache_key
        other = (await cached_agent_run(agent, "other", "foreign", store=store)).cache_key
        admin.delete(key)
        foreign(admin, key)
        result = await cached_agent_run(agent, "q", "foreign", store=store)
        assert result.output == "fresh" and not result.cached and len(calls) == 3
        assert (await cached_agent_run(agent, "other", "foreign", store=store)).cached  # the rest still serves
        assert (await cached_agent_run(agent, "q", "foreign", store=store)).cached  # overwritten with an entry
        assert admin.type(key) == b"string" and other
    finally:
        admin.close()
        await store.aclose()


async def test_eviction_under_maxmemory_with_allkeys_lru_keeps_working(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    admin.config_set("maxmemory", "3mb")
    admin.config_set("maxmemory-policy", "allkeys-lru")
    calls: list[str] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append("x")
        return ModelResponse(parts=[TextPart("y" * 20_000)])  # ~25 KB entries: 3 MB holds ~100

    agent = Agent(FunctionModel(respond, model_name="m"))
    store = RedisStore.from_url(redis_url)
    try:
        for i in range(300):
            assert (await cached_agent_run(agent, f"q{i}", "lru", store=store)).output == "y" * 20_000
        assert admin.info("stats")["evicted_keys"] > 0
        assert (await cached_agent_run(agent, "q299", "lru", store=store)).cached  # recent entries are kept
    finally:
        admin.config_set("maxmemory", "0")
        admin.config_set("maxmemory-policy", "noeviction")
        admin.close()
        await store.aclose()
