"""Modes: `read_write` (default), `replay` (hits only, never the model), `refresh` (always the model), `off`;
chosen per call or by `LLM_CACHE_MODE`, the call winning; anything else is refused before any model call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, field_validator
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import (
    CacheDriftError,
    CacheMissError,
    ConfigurationError,
    LocalStore,
    MemoryStore,
    RedisStore,
    cached_agent_run,
    cached_agent_run_sync,
    get_stats,
)


class Calls:
    def __init__(self) -> None:
        self.count = 0

    def agent(self) -> Agent[None, str]:
        def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            self.count += 1
            return ModelResponse(parts=[TextPart(f"answer {self.count}")])

        return Agent(FunctionModel(respond, model_name="gpt-4o-mini"))


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.mark.parametrize("mode", ["replay ", "READ", "record", "", 1])
async def test_an_unknown_mode_is_refused_before_the_model_is_called(calls: Calls, mode: Any) -> None:
    with pytest.raises(ConfigurationError, match="not a cache mode"):
        await cached_agent_run(calls.agent(), "q", "t", store=MemoryStore(), mode=mode)
    assert calls.count == 0


async def test_an_unknown_mode_in_the_environment_is_refused(calls: Calls, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CACHE_MODE", "playback")
    with pytest.raises(ConfigurationError, match="LLM_CACHE_MODE='playback'"):
        await cached_agent_run(calls.agent(), "q", "t", store=MemoryStore())
    assert calls.count == 0


async def test_replay_answers_recorded_calls_and_never_calls_the_model_on_a_miss(calls: Calls) -> None:
    store, agent = MemoryStore(), calls.agent()
    recorded = await cached_agent_run(agent, "recorded", "t", store=store)
    replayed = await cached_agent_run(agent, "recorded", "t", store=store, mode="replay")
    assert replayed.cached and replayed.output == recorded.output == "answer 1"
    with pytest.raises(CacheMissError, match="no recorded answer for this call of task 't'") as missed:
        await cached_agent_run(agent, "never recorded", "t", store=store, mode="replay")
    assert calls.count == 1
    assert missed.value.task_name == "t" and missed.value.key.startswith("pyai_caching:v2:t:")
    assert await store.get(missed.value.key) is None  # nothing was written for the miss
    stats = (await get_stats("t", store=store)).tasks["t"]
    assert (stats.hits, stats.misses) == (1, 2)


async def test_replay_serves_entries_past_their_ttl(calls: Calls, tmp_path: Path) -> None:
    now = [1000.0]
    memory = MemoryStore(clock=lambda: now[0])
    local = LocalStore(tmp_path / "cache")
    agent = calls.agent()
    for store in (memory, local):
        await cached_agent_run(agent, "q", "t", store=store, ttl=0.05)
    now[0] += 3600
    import asyncio

    await asyncio.sleep(0.1)
    for store in (memory, local):
        assert (await cached_agent_run(agent, "q", "t", store=store, mode="replay")).output in {"answer 1", "answer 2"}
    assert calls.count == 2
    assert len(await local.keys("")) == 1  # replay removed nothing
    again = await cached_agent_run(agent, "q", "t", store=memory)  # read_write: expired is expired
    assert not again.cached and calls.count == 3


async def test_refresh_always_calls_the_model_and_overwrites(calls: Calls) -> None:
    store, agent = MemoryStore(), calls.agent()
    await cached_agent_run(agent, "q", "t", store=store)
    refreshed = await cached_agent_run(agent, "q", "t", store=store, mode="refresh")
    assert not refreshed.cached and refreshed.output == "answer 2"
    assert (await cached_agent_run(agent, "q", "t", store=store)).output == "answer 2"
    assert calls.count == 2


async def test_off_neither_reads_nor_writes(calls: Calls) -> None:
    store, agent = MemoryStore(), calls.agent()
    await cached_agent_run(agent, "q", "t", store=store)
    first = await cached_agent_run(agent, "q", "t", store=store, mode="off")
    second = await cached_agent_run(agent, "other", "t", store=store, mode="off")
    assert (first.cached, second.cached, calls.count) == (False, False, 3)
    assert first.output == "answer 2"
    assert len(await store.keys("")) == 1  # only the read_write call's entry
    assert (await cached_agent_run(agent, "q", "t", store=store)).output == "answer 1"  # untouched


async def test_the_environment_sets_the_mode_and_the_call_wins(calls: Calls, monkeypatch: pytest.MonkeyPatch) -> None:
    store, agent = MemoryStore(), calls.agent()
    monkeypatch.setenv("LLM_CACHE_MODE", "replay")
    with pytest.raises(CacheMissError):
        await cached_agent_run(agent, "q", "t", store=store)
    assert calls.count == 0
    await cached_agent_run(agent, "q", "t", store=store, mode="read_write")
    assert (await cached_agent_run(agent, "q", "t", store=store)).cached
    assert calls.count == 1
    monkeypatch.setenv("LLM_CACHE_MODE", "Refresh")  # case-insensitive in the environment
    assert not (await cached_agent_run(agent, "q", "t", store=store)).cached


async def test_the_environment_is_read_on_every_call_however_it_is_changed(calls: Calls) -> None:
    """Settings come from `os.environ` as it is at each call: set, removed, patched, or replaced outright."""
    import os
    from unittest import mock

    store, agent = MemoryStore(), calls.agent()
    await cached_agent_run(agent, "q", "t", store=store)
    with mock.patch.dict(os.environ, {"LLM_CACHE_MODE": "refresh"}):
        assert not (await cached_agent_run(agent, "q", "t", store=store)).cached
    assert (await cached_agent_run(agent, "q", "t", store=store)).cached  # unset again
    with mock.patch("os.environ", {**os.environ, "LLM_CACHE_MODE": "off"}):  # a plain dict in its place
        assert not (await cached_agent_run(agent, "q", "t", store=store)).cached
    os.environ["LLM_CACHE_MODE"] = "replay"
    try:
        with pytest.raises(CacheMissError):
            await cached_agent_run(agent, "new", "t", store=store)
    finally:
        del os.environ["LLM_CACHE_MODE"]
    assert calls.count == 3


def test_sync_calls_take_the_mode_too(calls: Calls) -> None:
    store, agent = MemoryStore(), calls.agent()
    with pytest.raises(CacheMissError):
        cached_agent_run_sync(agent, "q", "t", store=store, mode="replay")
    assert cached_agent_run_sync(agent, "q", "t", store=store).output == "answer 1"
    assert cached_agent_run_sync(agent, "q", "t", store=store, mode="replay").cached


async def test_replay_on_an_unreachable_store_says_so_and_calls_no_model(calls: Calls) -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0", timeout=0.05)
    try:
        with pytest.raises(CacheMissError, match="could not be read"):
            await cached_agent_run(calls.agent(), "q", "t", store=store, mode="replay")
    finally:
        await store.aclose()
    assert calls.count == 0


async def test_a_run_that_cannot_be_keyed_cannot_be_replayed(calls: Calls) -> None:
    agent = calls.agent()

    @agent.tool_plain
    def lookup(q: str) -> str:
        return q

    with pytest.raises(CacheMissError, match="cannot be replayed"):
        await cached_agent_run(agent, "q", "t", store=MemoryStore(), mode="replay", deps=object(), key_extra=object())
    assert calls.count == 0


async def test_replay_with_in_flight_read_write_call_follows_it(calls: Calls) -> None:
    import asyncio

    started = asyncio.Event()

    async def slow(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        started.set()
        await asyncio.sleep(0.1)
        return ModelResponse(parts=[TextPart("slow answer")])

    agent, store = Agent(FunctionModel(slow, model_name="m")), MemoryStore()
    recording = asyncio.create_task(cached_agent_run(agent, "q", "t", store=store))
    await started.wait()
    replayed = await cached_agent_run(agent, "q", "t", store=store, mode="replay")
    assert replayed.output == "slow answer" and replayed.cached
    await recording


# -- drift: a recorded answer that no longer fits the output type fails loudly in replay


def _price_agent(model_cls: type[BaseModel], cents: int = 250) -> Agent[None, Any]:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"item": "tea", "cents": cents})])

    return Agent(FunctionModel(respond, model_name="m"), output_type=model_cls)


async def test_a_recording_that_no_longer_validates_fails_replay_naming_the_field() -> None:
    class Price(BaseModel):
        item: str
        cents: int

    store = MemoryStore()
    await cached_agent_run(_price_agent(Price), "price of tea", "t", store=store)

    class Price(BaseModel):  # type: ignore[no-redef] - the same schema, a stricter validator added since
        item: str
        cents: int

        @field_validator("cents")
        @classmethod
        def at_least_five_dollars(cls, value: int) -> int:
            if value < 500:
                raise ValueError("prices start at 500 cents")
            return value

    with pytest.raises(CacheDriftError, match=r"cannot be replayed: the output does not validate: output.cents: Value error, prices start at 500 cents") as drift:
        await cached_agent_run(_price_agent(Price), "price of tea", "t", store=store, mode="replay")
    assert isinstance(drift.value, CacheMissError)
    # outside replay a recording that does not validate is a miss: the model is asked
    again = await cached_agent_run(_price_agent(Price, cents=600), "price of tea", "t", store=store)
    assert not again.cached and again.output.cents == 600

