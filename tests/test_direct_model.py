"""A miss of a plain agent wraps its model for the run (`model=RetryingModel(...)`) instead of adding the
`RequestRetries` capability, which costs PydanticAI ~0.3 ms per run to combine. Both ways must give the same run:
same messages, output, usage, price and failed attempts; anything that could route a request around the wrapped
model keeps the capability."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent, RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.usage import RequestUsage

import pyai_caching._running as running
from pyai_caching import (
    ExpenseEvent,
    MemoryStore,
    cached_agent_run,
    cached_agent_run_stream,
)
from pyai_caching._attempts import RequestRetries, RetryingModel, direct_model

USAGE = RequestUsage(input_tokens=1000, output_tokens=100)


@dataclasses.dataclass
class Events:
    events: list[ExpenseEvent] = dataclasses.field(default_factory=list)

    def record(self, event: ExpenseEvent) -> None:
        self.events.append(event)


class Answer(BaseModel):
    city: str
    population: int


def tool_then_retry_agent(failures: list[Exception], seen_models: list[str], output_type: Any = str) -> Agent[Any, Any]:
    """A tool call, then a request failing with each of `failures` before it answers (text or an output tool)."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not any(isinstance(p, ToolReturnPart) for m in messages for p in m.parts):
            return ModelResponse(parts=[ToolCallPart("lookup", {"city": "Paris"})], usage=USAGE)
        if failures:
            raise failures.pop(0)
        if info.output_tools:
            args = {"city": "Paris", "population": 2100000}
            return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, args)], usage=USAGE)
        return ModelResponse(parts=[TextPart("Paris has 2.1 million people.")], usage=USAGE)

    agent = Agent(FunctionModel(respond, model_name="gpt-4o-mini"), output_type=output_type, instructions="Be brief.")

    @agent.tool
    def lookup(ctx: RunContext[Any], city: str) -> str:
        seen_models.append(ctx.model.model_name)
        return f"{city}: 2.1 million"

    return agent


def normalized(messages: list[ModelMessage]) -> Any:
    """The messages as JSON data without what differs from run to run (times, ids)."""
    volatile = {"timestamp", "run_id", "conversation_id", "tool_call_id", "id", "provider_response_id"}

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in volatile}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(ModelMessagesTypeAdapter.dump_json(messages)))


async def miss(direct: bool, monkeypatch: pytest.MonkeyPatch, output_type: Any = str) -> tuple[Any, ...]:
    """One miss of the tool-then-retry agent, either way; what it answered and what it reported."""
    seen_runs: list[dict[str, Any]] = []
    real = running.kwargs_with_retries

    def spy(call: Any, attempts: Any) -> dict[str, Any]:
        kwargs = real(call, attempts)
        seen_runs.append(kwargs)
        return kwargs

    with monkeypatch.context() as patched:
        patched.setattr(running, "kwargs_with_retries", spy)
        if not direct:
            patched.setattr(running, "direct_model", lambda agent, run_kwargs: None)
        events = Events()
        seen_models: list[str] = []
        agent = tool_then_retry_agent([ModelHTTPError(503, "gpt-4o-mini", body="busy")], seen_models, output_type)
        result = await cached_agent_run(
            agent, "How many people live in Paris?", "direct", store=MemoryStore(), initial_wait=0.01, max_wait=1,
            expense_recorder=events,
        )  # fmt: skip
    (kwargs,) = seen_runs
    wrapped = isinstance(kwargs.get("model"), RetryingModel)
    capability = any(isinstance(c, RequestRetries) for c in kwargs.get("capabilities") or ())
    assert (wrapped, capability) == ((True, False) if direct else (False, True))
    (event,) = events.events
    return (
        result.output,
        normalized(result.all_messages()),
        dataclasses.asdict(result.usage),
        result.cost,
        event.failed_attempts,
        seen_models,
    )


@pytest.mark.parametrize("output_type", [str, Answer], ids=["text", "output tool"])
async def test_a_plain_agent_s_miss_wraps_its_model_and_runs_as_with_the_capability(
    monkeypatch: pytest.MonkeyPatch, output_type: Any
) -> None:
    direct = await miss(True, monkeypatch, output_type)
    with_capability = await miss(False, monkeypatch, output_type)
    assert direct == with_capability
    output, _, _, cost, failed_attempts, seen_models = direct
    assert failed_attempts == 1 and cost is not None and cost > 0
    assert seen_models == ["gpt-4o-mini"]  # a tool's `ctx.model` answers for the agent's model
    assert output == ("Paris has 2.1 million people." if output_type is str else Answer(city="Paris", population=2100000))


async def test_a_streamed_miss_of_a_plain_agent_wraps_its_model_and_streams_as_with_the_capability(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def streamed(direct: bool) -> tuple[Any, ...]:
        with monkeypatch.context() as patched:
            if not direct:
                patched.setattr(running, "direct_model", lambda agent, run_kwargs: None)
            agent = Agent(TestModel(custom_output_text="one two three four"))
            async with cached_agent_run_stream(agent, "count", "direct-stream", store=MemoryStore()) as stream:
                chunks = [chunk async for chunk in stream.stream_text(delta=True, debounce_by=None)]
            return chunks, normalized(stream.all_messages()), dataclasses.asdict(stream.usage)

    assert await streamed(True) == await streamed(False)


class _Routing(AbstractCapability[Any]):
    """A user capability: it could move a request to another model."""


def _agents() -> dict[str, tuple[Agent[Any, Any], dict[str, Any]]]:
    model = TestModel()
    instrumented = Agent(model)
    instrumented.instrument = True
    return {
        "a capability of the agent's": (Agent(model, capabilities=[_Routing()]), {}),
        "a capability of the run's": (Agent(model), {"capabilities": [_Routing()]}),
        "instrumented": (instrumented, {}),
        "a run's model by name": (Agent(model), {"model": "test"}),
        "a wrapped model": (Agent(WrapperModel(model)), {}),
        "a run argument that may add a capability": (Agent(model), {"spec": {"instructions": "hi"}}),
    }


@pytest.mark.parametrize("name", list(_agents()))
def test_a_run_that_could_route_around_its_model_keeps_the_capability(name: str) -> None:
    agent, run_kwargs = _agents()[name]
    assert direct_model(Agent(TestModel()), {}) is not None  # (the plain agent it is compared with)
    assert direct_model(agent, run_kwargs) is None


async def test_an_overridden_or_entered_agent_keeps_the_capability() -> None:
    agent = Agent(TestModel())
    with agent.override(model=TestModel(custom_output_text="overridden")):
        assert direct_model(agent, {}) is None
    async with agent:
        assert direct_model(agent, {}) is None
    assert direct_model(agent, {}) is agent.model


def test_a_run_s_own_model_is_the_one_wrapped() -> None:
    own = TestModel(custom_output_text="the run's")
    assert direct_model(Agent(TestModel()), {"model": own}) is own
