"""Retries never redo paid work: the failed model request is retried, not the run; every response that came
back is priced, failed attempts are counted, and `max_wait` bounds all the waiting of a run."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_ai import Agent, RunContext
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RequestUsage

from pyai_caching import DEFAULT_COSTS, ExpenseEvent, MemoryStore, UsageLimitExceeded, cached_agent_run, get_stats

from openai_server import FakeOpenAIServer, error_reply, openai_model, text_reply

USAGE = RequestUsage(input_tokens=1000, output_tokens=100)
PRICE = DEFAULT_COSTS["gpt-4o-mini"]
ONE_RESPONSE = (1000 * PRICE.cost_per_million_input_tokens + 100 * PRICE.cost_per_million_output_tokens) / 1e6


class Events:
    def __init__(self) -> None:
        self.events: list[ExpenseEvent] = []

    def record(self, event: ExpenseEvent) -> None:
        self.events.append(event)


def payment_agent(failures_after_the_tool: list[Exception], charges: list[int], requests: list[int]) -> Agent[Any, str]:
    """First request: call `charge_card`; after the tool ran, the next request fails with each error in turn."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        requests.append(1)
        tool_ran = any(isinstance(p, ToolReturnPart) for m in messages for p in m.parts)
        if not tool_ran:
            return ModelResponse(parts=[ToolCallPart("charge_card", {"cents": 500})], usage=USAGE)
        if failures_after_the_tool:
            raise failures_after_the_tool.pop(0)
        return ModelResponse(parts=[TextPart("Charged $5.")], usage=USAGE)

    agent = Agent(FunctionModel(respond, model_name="gpt-4o-mini"))

    @agent.tool_plain
    def charge_card(cents: int) -> str:
        charges.append(cents)
        return "ok"

    return agent


async def test_a_failed_request_is_retried_alone_and_the_tool_never_runs_twice() -> None:
    charges: list[int] = []
    requests: list[int] = []
    events = Events()
    agent = payment_agent([ModelHTTPError(503, "gpt-4o-mini", body="overloaded")], charges, requests)
    result = await cached_agent_run(
        agent, "charge me", "pay", store=MemoryStore(), initial_wait=0.01, max_wait=1, expense_recorder=events
    )
    assert result.output == "Charged $5."
    assert charges == [500]  # the whole run retried would have charged twice
    assert len(requests) == 3  # tool call, failed attempt, retried attempt: the first request is not sent again
    (event,) = events.events
    assert event.failed_attempts == 1 and not event.failed
    assert result.cost == pytest.approx(2 * ONE_RESPONSE)


async def test_a_run_that_gives_up_still_prices_and_reports_what_it_paid_for() -> None:
    charges: list[int] = []
    requests: list[int] = []
    events = Events()
    store = MemoryStore()
    errors: list[Exception] = [ModelHTTPError(429, "gpt-4o-mini", body="slow down") for _ in range(50)]
    agent = payment_agent(errors, charges, requests)
    with pytest.raises(UsageLimitExceeded):
        await cached_agent_run(
            agent, "charge me", "pay", store=store, initial_wait=0.01, max_wait=0.05, expense_recorder=events
        )
    assert charges == [500]
    (event,) = events.events
    assert event.failed and not event.cached and event.failed_attempts >= 2
    assert event.cost == pytest.approx(ONE_RESPONSE)  # the tool-call response was paid for
    stats = (await get_stats("pay", store=store)).total
    assert stats.failed == 1 and stats.cost_spent == pytest.approx(ONE_RESPONSE) and stats.misses == 0


async def test_max_wait_bounds_the_waiting_of_the_whole_run() -> None:
    """Each request alone fits the budget (one 1 s wait); two requests together do not."""
    waits = iter([1, 1])

    def limited() -> ModelHTTPError:
        headers = {"retry-after": str(next(waits))}
        return ModelHTTPError(429, "gpt-4o-mini", "slow down", headers=headers)  # type: ignore[call-arg]

    calls: list[int] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append(1)
        tool_ran = any(isinstance(p, ToolReturnPart) for m in messages for p in m.parts)
        if len(calls) in (1, 3):  # the first attempt of each of the two requests
            raise limited()
        if not tool_ran:
            return ModelResponse(parts=[ToolCallPart("lookup", {})], usage=USAGE)
        return ModelResponse(parts=[TextPart("done")], usage=USAGE)

    agent = Agent(FunctionModel(respond, model_name="gpt-4o-mini"))

    @agent.tool_plain
    def lookup() -> str:
        return "found"

    with pytest.raises(UsageLimitExceeded, match="budget"):
        await cached_agent_run(agent, "q", "budget", store=MemoryStore(), initial_wait=0.01, max_wait=1.5)


# ----------------------------------------------------------------- through the real openai SDK


async def test_the_sdk_does_not_retry_under_our_backoff(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(
        error_reply(429, "Rate limit reached", code="rate_limit_exceeded", headers={"retry-after-ms": "1"}),
        text_reply("hello"),
    )
    agent = Agent(openai_model(openai_server, max_retries=2))  # the SDK would retry twice on its own
    result = await cached_agent_run(agent, "hi", "sdk", store=MemoryStore(), initial_wait=0.01, max_wait=1)
    assert result.output == "hello"
    sent = [r for r in openai_server.requests if r.path.endswith("/chat/completions")]
    assert len(sent) == 2
    assert [r.headers.get("x-stainless-retry-count") for r in sent] == ["0", "0"]  # both attempts are ours


async def test_the_sdk_retries_when_the_caller_asks_for_it(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(
        error_reply(429, "Rate limit reached", code="rate_limit_exceeded", headers={"retry-after-ms": "1"}),
        text_reply("hello"),
    )
    agent = Agent(openai_model(openai_server, max_retries=0))
    result = await cached_agent_run(
        agent, "hi", "sdk", store=MemoryStore(), model_settings={"max_retries": 1}, initial_wait=0.01, max_wait=1
    )
    assert result.output == "hello"
    sent = [r for r in openai_server.requests if r.path.endswith("/chat/completions")]
    assert [r.headers.get("x-stainless-retry-count") for r in sent] == ["0", "1"]  # the SDK's own retry


async def test_pydantic_ais_model_fallback_still_falls_back_under_the_cache() -> None:
    from pydantic_ai import capabilities

    if not hasattr(capabilities, "ModelFallback"):
        pytest.skip("ModelFallback is not in this PydanticAI")

    def primary(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise ModelHTTPError(429, "primary", body="rate limited")

    def backup(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("from backup")])

    agent = Agent(
        FunctionModel(primary, model_name="primary"),
        capabilities=[capabilities.ModelFallback(FunctionModel(backup, model_name="backup"))],
    )
    result = await cached_agent_run(agent, "q", "fallback", store=MemoryStore(), initial_wait=0.5, max_wait=3)
    assert result.output == "from backup"  # at once, not after max_wait of retrying the primary


async def test_an_output_type_list_is_keyed_once_per_spec() -> None:
    from pydantic import BaseModel

    class A(BaseModel):
        a: int

    class B(BaseModel):
        b: str

    calls: list[int] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append(1)
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"a": 1})])

    agent = Agent(FunctionModel(respond))
    store = MemoryStore()
    first = await cached_agent_run(agent, "q", "union", store=store, output_type=[A, B])
    second = await cached_agent_run(agent, "q", "union", store=store, output_type=[A, B])
    assert second.cached and calls == [1] and second.output == first.output


async def test_a_stream_failing_part_way_counts_as_a_failed_attempt() -> None:
    """Events already reached the caller, so the request is not sent again; the failure is still reported."""
    from collections.abc import AsyncIterator

    sent: list[int] = []

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        sent.append(1)
        yield "Half an ans"
        raise ModelHTTPError(503, "gpt-4o-mini", body="connection reset mid-stream")

    async def handler(ctx: Any, events: Any) -> None:
        async for _ in events:
            pass

    events = Events()
    agent = Agent(FunctionModel(stream_function=stream, model_name="gpt-4o-mini"))
    with pytest.raises(ModelHTTPError):
        await cached_agent_run(
            agent, "hi", "stream", store=MemoryStore(), expense_recorder=events, event_stream_handler=handler
        )
    assert sent == [1]
    assert [(e.failed, e.failed_attempts) for e in events.events] == [(True, 1)]


async def test_the_run_s_own_code_sees_the_agent_s_model_not_the_retrying_wrapper() -> None:
    """Retries wrap the model serving each request only: tools, instructions and validators see the agent's own
    model (a type check in them sends the request the run would send without the cache)."""
    model = TestModel(custom_output_text="ok", call_tools=["look"])
    agent = Agent(model)
    seen: list[tuple[str, bool]] = []

    @agent.instructions
    def by_model(ctx: RunContext[Any]) -> str:
        seen.append(("instructions", ctx.model is model))
        return "Answer as TestModel." if isinstance(ctx.model, TestModel) else "Answer generically."

    @agent.tool
    def look(ctx: RunContext[Any]) -> str:
        seen.append(("tool", ctx.model is model))
        return "looked"

    @agent.output_validator
    def check(ctx: RunContext[Any], output: str) -> str:
        seen.append(("validator", ctx.model is model))
        return output

    result = await cached_agent_run(agent, "hi", "own-model", store=MemoryStore())
    assert seen and all(same for _, same in seen), seen
    assert {kind for kind, _ in seen} == {"instructions", "tool", "validator"}
    assert result.all_messages()[0].instructions == "Answer as TestModel."


async def test_a_cached_call_made_from_a_tool_with_its_run_s_model_hits_on_the_next_run() -> None:
    """A sub-agent called from a tool with `model=ctx.model` is keyed by that model, the same on every run."""
    sub_calls: list[int] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if messages[0].parts[-1].content == "summarise":  # type: ignore[union-attr]
            sub_calls.append(1)
            return ModelResponse(parts=[TextPart("summary")])
        if not any(isinstance(p, ToolReturnPart) for m in messages for p in m.parts):
            return ModelResponse(parts=[ToolCallPart("summarise", {})])
        return ModelResponse(parts=[TextPart("done")])

    agent: Agent[Any, str] = Agent(FunctionModel(respond, model_name="gpt-4o-mini"))
    sub: Agent[Any, str] = Agent()
    sub_store = MemoryStore()
    cached: list[bool] = []

    @agent.tool
    async def summarise(ctx: RunContext[Any]) -> str:
        result = await cached_agent_run(sub, "summarise", "sub", model=ctx.model, store=sub_store)
        cached.append(result.cached)
        return result.output

    for question in ("first", "second", "third"):
        await cached_agent_run(agent, question, "outer", store=MemoryStore())
    assert cached == [False, True, True] and len(sub_calls) == 1
