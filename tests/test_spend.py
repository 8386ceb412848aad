"""Spend through the front door: pricing, expense recorders, backoff, stats."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.exceptions import UsageLimitExceeded as PydanticAIUsageLimitExceeded
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage, UsageLimits

from pyai_caching import (
    DEFAULT_COSTS,
    ExpenseEvent,
    MemoryStore,
    ModelCosts,
    UsageLimitExceeded,
    cached_agent_run,
    costs,
    get_stats,
    recorders,
)


def text_model(name: str, usage: RequestUsage, calls: list[int] | None = None) -> FunctionModel:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if calls is not None:
            calls.append(1)
        return ModelResponse(parts=[TextPart("ok")], usage=usage)

    return FunctionModel(respond, model_name=name)


@pytest.fixture
def memory() -> MemoryStore:
    return MemoryStore()


@pytest.fixture(autouse=True)
def _fresh_price_warnings() -> None:
    costs._reset_warnings()


# --- pricing ----------------------------------------------------------------------------------


async def test_prompt_cache_reads_and_writes_are_priced_at_their_own_rates(memory: MemoryStore) -> None:
    usage = RequestUsage(input_tokens=1_000_000, cache_read_tokens=200_000, cache_write_tokens=100_000, output_tokens=50_000)
    agent = Agent(text_model("claude-3-5-haiku-latest", usage))
    result = await cached_agent_run(agent, "q", "t", store=memory)

    p = DEFAULT_COSTS["claude-3-5-haiku-latest"]
    assert p.cost_per_million_caching_hit_tokens is not None and p.cost_per_million_caching_input_tokens is not None
    expected = (
        700_000 * p.cost_per_million_input_tokens
        + 100_000 * p.cost_per_million_caching_input_tokens
        + 200_000 * p.cost_per_million_caching_hit_tokens
        + 50_000 * p.cost_per_million_output_tokens
    ) / 1e6
    assert result.cost == pytest.approx(expected)
    # a cache read is not billed at the full input price
    assert result.cost < (1_000_000 * p.cost_per_million_input_tokens + 50_000 * p.cost_per_million_output_tokens) / 1e6


async def test_custom_costs_override_the_default_table_with_or_without_prefix(memory: MemoryStore) -> None:
    agent = Agent(text_model("gpt-4o", RequestUsage(input_tokens=2_000_000, output_tokens=1_000_000)))
    custom = {"openai:gpt-4o": ModelCosts(cost_per_million_input_tokens=1.0, cost_per_million_output_tokens=10.0)}
    result = await cached_agent_run(agent, "q", "t", store=memory, custom_costs=custom)
    assert result.cost == pytest.approx(2.0 + 10.0)


async def test_a_multi_request_tool_loop_is_priced_over_its_whole_usage(memory: MemoryStore) -> None:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart("lookup", {"q": "x"})], usage=RequestUsage(input_tokens=1000, output_tokens=10))
        return ModelResponse(parts=[TextPart("done")], usage=RequestUsage(input_tokens=3000, output_tokens=100))

    agent = Agent(FunctionModel(respond, model_name="gpt-4o-mini"))

    @agent.tool_plain
    def lookup(q: str) -> str:
        return "found"

    result = await cached_agent_run(agent, "q", "t", store=memory)
    p = DEFAULT_COSTS["gpt-4o-mini"]
    assert result.usage.requests == 2
    assert result.cost == pytest.approx((4000 * p.cost_per_million_input_tokens + 110 * p.cost_per_million_output_tokens) / 1e6)


async def test_models_outside_the_table_are_priced_by_genai_prices(memory: MemoryStore) -> None:
    assert "mistral-large-latest" not in DEFAULT_COSTS
    agent = Agent(text_model("mistral-large-latest", RequestUsage(input_tokens=1_000_000, output_tokens=0)))
    result = await cached_agent_run(agent, "q", "t", store=memory)
    assert result.cost is not None and result.cost > 0


async def test_an_unpriced_model_never_raises_is_cached_and_warns_once(
    memory: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    agent = Agent(text_model("my-inhouse-llm-7b", RequestUsage(input_tokens=10, output_tokens=10), calls))
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        first = await cached_agent_run(agent, "q", "t", store=memory)
        second_miss = await cached_agent_run(agent, "other", "t", store=memory)
        hit = await cached_agent_run(agent, "q", "t", store=memory)
    assert first.cost is None and second_miss.cost is None
    assert hit.cached and hit.cost == 0.0 and hit.saved_cost is None
    assert len(calls) == 2
    warnings = [r for r in caplog.records if "my-inhouse-llm-7b" in r.getMessage()]
    assert len(warnings) == 1
    assert "custom_costs" in warnings[0].getMessage()


# --- expense recorders ------------------------------------------------------------------------


async def test_seed_signature_recorder_sync_and_async(memory: MemoryStore) -> None:
    agent = Agent(text_model("gpt-4o-mini", RequestUsage(input_tokens=1000, output_tokens=100)))
    sync_calls: list[tuple[str, str, float]] = []
    async_calls: list[tuple[str, str, float]] = []

    def sync_recorder(model: str, task_name: str, cost: float) -> None:
        sync_calls.append((model, task_name, cost))

    async def async_recorder(model: str, task_name: str, cost: float) -> None:
        async_calls.append((model, task_name, cost))

    miss = await cached_agent_run(agent, "q", "faq", store=memory, expense_recorder=sync_recorder)
    await cached_agent_run(agent, "q", "faq", store=memory, expense_recorder=async_recorder)
    assert sync_calls == [("gpt-4o-mini", "faq", pytest.approx(miss.cost))]
    assert async_calls == [("gpt-4o-mini", "faq", 0.0)]


async def test_event_recorder_gets_spent_saved_usage_latency_and_key(memory: MemoryStore) -> None:
    agent = Agent(text_model("gpt-4o-mini", RequestUsage(input_tokens=1000, output_tokens=100)))
    events: list[ExpenseEvent] = []

    class Recorder:
        async def record(self, event: ExpenseEvent) -> None:
            events.append(event)

    miss = await cached_agent_run(agent, "q", "faq", store=memory, expense_recorder=Recorder())
    hit = await cached_agent_run(agent, "q", "faq", store=memory, expense_recorder=Recorder())
    spent, saved = events
    assert (spent.cached, spent.cost, spent.saved) == (False, pytest.approx(miss.cost), 0.0)
    assert (saved.cached, saved.cost, saved.saved) == (True, 0.0, pytest.approx(miss.cost))
    assert spent.usage.input_tokens == saved.usage.input_tokens == 1000
    assert spent.key == saved.key == hit.cache_key
    assert spent.latency > 0 and saved.task_name == "faq" and saved.model == "gpt-4o-mini"


async def test_a_raising_recorder_never_fails_the_run_nor_prevents_caching(
    memory: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    agent = Agent(text_model("gpt-4o-mini", RequestUsage(input_tokens=10, output_tokens=10), calls))

    def broken(model: str, task_name: str, cost: float) -> None:
        raise RuntimeError("ledger offline")

    with caplog.at_level(logging.ERROR, logger="pyai_caching"):
        result = await cached_agent_run(agent, "q", "t", store=memory, expense_recorder=broken)
    assert result.output == "ok"
    assert "ledger offline" in caplog.text
    assert (await cached_agent_run(agent, "q", "t", store=memory)).cached
    assert len(calls) == 1


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_hanging_recorder_is_abandoned(
    memory: MemoryStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    monkeypatch.setattr(recorders, "RECORDER_TIMEOUT", 0.1)
    agent = Agent(text_model("gpt-4o-mini", RequestUsage(input_tokens=10, output_tokens=10)))

    release = threading.Event()  # the recorder never finishes unless the test lets it
    finished: list[bool] = []

    async def hang_async(model: str, task_name: str, cost: float) -> None:
        await asyncio.get_running_loop().run_in_executor(None, release.wait)
        finished.append(True)

    def hang_sync(model: str, task_name: str, cost: float) -> None:
        release.wait()
        finished.append(True)

    try:
        with caplog.at_level(logging.ERROR, logger="pyai_caching"):
            result = await cached_agent_run(
                agent, "q", "t", store=memory, expense_recorder=hang_async if kind == "async" else hang_sync
            )
        assert result.output == "ok"
        assert finished == []  # returned while the recorder was still stuck
        assert "took more than" in caplog.text
    finally:
        release.set()


# --- backoff ----------------------------------------------------------------------------------


def flaky_model(errors: list[Exception]) -> tuple[FunctionModel, list[int]]:
    calls: list[int] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return ModelResponse(parts=[TextPart("ok")], usage=RequestUsage(input_tokens=10, output_tokens=10))

    return FunctionModel(respond, model_name="gpt-4o-mini"), calls


async def test_http_429_and_503_are_retried_then_cached(memory: MemoryStore) -> None:
    model, calls = flaky_model(
        [ModelHTTPError(429, "gpt-4o-mini", body={"error": "rate limited"}), ModelHTTPError(503, "gpt-4o-mini")]
    )
    result = await cached_agent_run(Agent(model), "q", "t", store=memory, initial_wait=0.01, max_wait=1.0)
    assert result.output == "ok" and len(calls) == 3
    assert (await cached_agent_run(Agent(model), "q", "t", store=memory)).cached


async def test_rate_limit_with_retry_after_is_honoured(memory: MemoryStore) -> None:
    limited = ModelHTTPError(429, "gpt-4o-mini", "slow down", headers={"retry-after": "1"})  # type: ignore[call-arg]
    model, calls = flaky_model([limited])
    started = time.monotonic()
    result = await cached_agent_run(Agent(model), "q", "t", store=memory, initial_wait=0.01, max_wait=2.0)
    assert result.output == "ok" and len(calls) == 2
    assert time.monotonic() - started >= 1.0


async def test_client_errors_are_not_retried(memory: MemoryStore) -> None:
    model, calls = flaky_model([ModelHTTPError(400, "gpt-4o-mini", body={"error": "bad request"})])
    with pytest.raises(ModelHTTPError) as info:
        await cached_agent_run(Agent(model), "q", "t", store=memory, initial_wait=0.01)
    assert info.value.status_code == 400 and len(calls) == 1


async def test_pydantic_ai_local_usage_limit_is_not_retried(memory: MemoryStore) -> None:
    model, calls = flaky_model([])
    with pytest.raises(PydanticAIUsageLimitExceeded):
        await cached_agent_run(
            Agent(model), "q", "t", store=memory, usage_limits=UsageLimits(output_tokens_limit=1), initial_wait=0.01
        )
    assert len(calls) == 1


async def test_giving_up_raises_usage_limit_exceeded_chained_to_the_provider_error(memory: MemoryStore) -> None:
    model, calls = flaky_model([ModelHTTPError(429, "gpt-4o-mini") for _ in range(50)])
    with pytest.raises(UsageLimitExceeded) as info:
        await cached_agent_run(Agent(model), "q", "t", store=memory, initial_wait=0.01, max_wait=0.05)
    assert isinstance(info.value.__cause__, ModelHTTPError)
    assert 2 <= len(calls) < 50
    assert memory._entries == {}


# --- stats ------------------------------------------------------------------------------------


async def test_stats_count_hits_misses_errors_spend_and_savings(memory: MemoryStore) -> None:
    agent = Agent(text_model("gpt-4o-mini", RequestUsage(input_tokens=1000, output_tokens=100)))
    miss = await cached_agent_run(agent, "a", "faq", store=memory)
    for _ in range(3):
        await cached_agent_run(agent, "a", "faq", store=memory)
    await cached_agent_run(agent, "b", "other", store=memory)
    assert miss.cache_key is not None
    await memory.set(miss.cache_key, b"corrupt", None)
    await cached_agent_run(agent, "a", "faq", store=memory)  # error + miss

    report = await get_stats(store=memory)
    faq = report.tasks["faq"]
    assert (faq.hits, faq.misses, faq.errors) == (3, 2, 1)
    assert faq.hit_rate == pytest.approx(3 / 5)
    assert faq.cost_spent == pytest.approx(2 * (miss.cost or 0))
    assert faq.cost_saved == pytest.approx(3 * (miss.cost or 0))
    assert faq.time_saved > 0
    assert report.total.misses == 3 and report.total.hits == 3
    only = await get_stats("faq", store=memory)
    assert list(only.tasks) == ["faq"]


async def test_stats_are_buffered_off_the_hit_path_and_flushed_later(memory: MemoryStore) -> None:
    agent = Agent(text_model("gpt-4o-mini", RequestUsage(input_tokens=1000, output_tokens=100)))
    await cached_agent_run(agent, "a", "faq", store=memory)
    assert await memory.get_counters("pyai_caching:stats:") == {}
    await asyncio.sleep(0.7)
    assert (await memory.get_counters("pyai_caching:stats:"))["pyai_caching:stats:faq"]["misses"] == 1




async def test_get_stats_rejects_bad_task_names_and_missing_configuration(memory: MemoryStore) -> None:
    from pyai_caching import ConfigurationError

    with pytest.raises(ValueError, match="task_name"):
        await get_stats("a:b", store=memory)
    with pytest.raises(ConfigurationError, match="LLM_CACHE_REDIS_URL"):
        await get_stats()
