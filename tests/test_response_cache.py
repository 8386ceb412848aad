"""`ResponseCache`: each model request cached on its own; the agent loop (and its tools) still runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.tools import ToolDefinition

from pyai_caching import (
    CacheMissError,
    ExpenseEvent,
    MemoryStore,
    ModelCosts,
    ResponseCache,
    cached_agent_run,
    cached_agent_run_stream,
    get_stats,
)
from pyai_caching._keys import request_digest
from pyai_caching._keys._requests import model_request_digest
from pyai_caching._scope import scoped

COSTS = {"function:answer:stream_answer": ModelCosts(cost_per_million_input_tokens=1e6, cost_per_million_output_tokens=0)}
"""$1 per input token: every response has a visible price."""


@dataclass
class Calls:
    requests: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)


def weather_agent(calls: Calls, **cache: Any) -> Agent[None, str]:
    """A model that asks for the weather tool, then answers with what it returned (streamed in three chunks)."""

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1].parts[-1]
        calls.requests.append(type(last).__name__)
        if isinstance(last, ToolReturnPart):
            return ModelResponse(parts=[TextPart(f"It is {last.content}.")])
        return ModelResponse(parts=[ToolCallPart("weather", {"city": "Paris"})])

    async def stream_answer(messages: list[ModelMessage], info: AgentInfo) -> Any:
        last = messages[-1].parts[-1]
        calls.requests.append(type(last).__name__)
        if isinstance(last, ToolReturnPart):
            for chunk in ("It ", "is ", f"{last.content}", "."):
                yield chunk
        else:
            yield {0: DeltaToolCall(name="weather", json_args='{"city": ')}
            yield {0: DeltaToolCall(json_args='"Paris"}')}

    cache.setdefault("store", MemoryStore())
    cache.setdefault("custom_costs", COSTS)
    agent = Agent(FunctionModel(answer, stream_function=stream_answer), capabilities=[ResponseCache(task_name="weather", **cache)])

    @agent.tool_plain
    def weather(city: str) -> str:
        calls.tools.append(city)
        return "sunny"

    return agent


def cached_marks(messages: list[ModelMessage]) -> list[bool]:
    return [bool((m.metadata or {}).get("pyai_caching", {}).get("cached")) for m in messages if isinstance(m, ModelResponse)]


def content(messages: list[ModelMessage]) -> list[Any]:
    """Messages by their parts' content, without timestamps and ids."""
    out = []
    for message in messages:
        for part in message.parts:
            data = {k: v for k, v in vars(part).items() if k not in ("timestamp", "tool_call_id", "id")}
            out.append((type(part).__name__, json.dumps(data, default=str, sort_keys=True)))
    return out


async def test_tools_run_on_every_run_and_each_distinct_request_reaches_the_model_once() -> None:
    calls = Calls()
    agent = weather_agent(calls)
    first = await agent.run("weather?")
    second = await agent.run("weather?")
    assert first.output == second.output == "It is sunny."
    assert calls.tools == ["Paris", "Paris"]  # the agent loop ran both times
    assert calls.requests == ["UserPromptPart", "ToolReturnPart"]  # the model only the first time
    assert cached_marks(first.all_messages()) == [False, False]
    assert cached_marks(second.all_messages()) == [True, True]
    assert second.usage == first.usage  # the recorded usage stays on the responses
    assert content(second.all_messages()) == content(first.all_messages())
    assert second.run_id != first.run_id


async def test_a_changed_request_reaches_the_model() -> None:
    calls = Calls()
    agent = weather_agent(calls)
    await agent.run("weather?")
    await agent.run("weather today?")
    await agent.run("weather?", model_settings={"temperature": 0.3})
    assert calls.requests == ["UserPromptPart", "ToolReturnPart"] * 3


async def test_a_stream_is_replayed_with_its_original_chunks() -> None:
    calls = Calls()
    agent = weather_agent(calls)
    deltas = []
    for _ in range(2):
        async with agent.run_stream("weather?") as stream:
            deltas.append([d async for d in stream.stream_text(delta=True, debounce_by=None)])
            usage = stream.usage
    assert deltas[0] == deltas[1] == ["It ", "is ", "sunny", "."]
    assert calls.requests == ["UserPromptPart", "ToolReturnPart"]
    assert calls.tools == ["Paris", "Paris"]
    assert usage.requests == 2


async def test_streamed_and_plain_requests_share_entries_both_ways() -> None:
    calls = Calls()
    plain_first = weather_agent(calls)
    await plain_first.run("weather?")
    async with plain_first.run_stream("weather?") as stream:
        assert [d async for d in stream.stream_text(delta=True, debounce_by=None)] == ["It is sunny."]  # one event per part
    assert len(calls.requests) == 2

    calls = Calls()
    streamed_first = weather_agent(calls)
    async with streamed_first.run_stream("weather?") as stream:
        await stream.get_output()
    result = await streamed_first.run("weather?")
    assert result.output == "It is sunny." and len(calls.requests) == 2
    assert cached_marks(result.all_messages()) == [True, True]


async def test_a_stream_read_part_way_is_not_stored() -> None:
    calls = Calls()
    agent = weather_agent(calls)
    async with agent.run_stream("weather?") as stream:
        async for _ in stream.stream_text(delta=True, debounce_by=None):
            break
    assert calls.requests == ["UserPromptPart", "ToolReturnPart"]
    async with agent.run_stream("weather?") as stream:
        assert await stream.get_output() == "It is sunny."
    # the tool call request was read to its end (stored); the answer was not, so it is asked again
    assert calls.requests == ["UserPromptPart", "ToolReturnPart", "ToolReturnPart"]


async def test_iter_and_run_stream_events_work_unchanged() -> None:
    calls = Calls()
    agent = weather_agent(calls)
    async with agent.run_stream_events("weather?") as events:
        live = [type(e).__name__ async for e in events]
    async with agent.run_stream_events("weather?") as events:
        replayed = [type(e).__name__ async for e in events]
    assert replayed == live and "FunctionToolResultEvent" in live
    async with agent.iter("weather?") as run:
        async for _ in run:
            pass
    assert run.result is not None and run.result.output == "It is sunny."
    assert len(calls.requests) == 2 and len(calls.tools) == 3


async def test_replay_answers_recorded_requests_and_explains_a_new_one() -> None:
    store = MemoryStore()
    calls = Calls()
    await weather_agent(calls, store=store).run("weather?")
    replaying = weather_agent(calls, store=store, mode="replay")
    assert (await replaying.run("weather?")).output == "It is sunny."
    with pytest.raises(CacheMissError) as missed:
        await replaying.run("weather tomorrow?")
    assert "message 1 (user prompt) differs" in str(missed.value)
    assert len(calls.requests) == 2


async def test_hits_are_saved_never_spent() -> None:
    store, events = MemoryStore(), []
    calls = Calls()
    agent = weather_agent(calls, store=store, expense_recorder=type("R", (), {"record": lambda self, e: events.append(e)})())
    await agent.run("weather?")
    await agent.run("weather?")
    misses, hits = events[:2], events[2:]
    assert all(isinstance(e, ExpenseEvent) for e in events)
    assert [e.cached for e in misses] == [False, False] and [e.cached for e in hits] == [True, True]
    assert all(e.cost and e.cost > 0 for e in misses)
    assert [e.saved for e in hits] == [e.cost for e in misses] and all(e.cost == 0.0 for e in hits)
    stats = (await get_stats("weather", store=store)).tasks["weather"]
    assert (stats.hits, stats.misses) == (2, 2)
    assert stats.cost_saved == pytest.approx(stats.cost_spent) and stats.cost_spent > 0


async def test_an_unreadable_entry_is_a_miss_and_is_overwritten() -> None:
    store, calls = MemoryStore(), Calls()
    agent = weather_agent(calls, store=store)
    await agent.run("weather?")
    for key in await store.keys("pyai_caching:v2:weather:"):
        await store.set(key, b"{not json", None)
    assert (await agent.run("weather?")).output == "It is sunny."
    assert (await agent.run("weather?")).output == "It is sunny."
    assert len(calls.requests) == 4


async def test_a_failing_store_never_fails_the_request() -> None:
    class Broken(MemoryStore):
        async def get(self, key: str) -> bytes | None:
            raise ConnectionError("down")

        async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
            raise ConnectionError("down")

    calls = Calls()
    agent = weather_agent(calls, store=Broken())
    assert (await agent.run("weather?")).output == "It is sunny."
    assert (await agent.run("weather?")).output == "It is sunny."
    assert len(calls.requests) == 4


def test_bad_arguments_are_rejected_when_the_capability_is_made() -> None:
    with pytest.raises(ValueError):
        ResponseCache(task_name="")
    with pytest.raises(TypeError, match="Store"):
        ResponseCache(task_name="t", store="redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="mode"):
        ResponseCache(task_name="t", mode="sometimes")  # type: ignore[arg-type]


def test_a_whole_run_key_does_not_depend_on_how_responses_are_cached() -> None:
    a = Agent(TestModel(), capabilities=[ResponseCache(task_name="a", store=MemoryStore())])
    b = Agent(TestModel(), capabilities=[ResponseCache(task_name="b", ttl=5)])
    assert request_digest(a, "q", [], {}) == request_digest(b, "q", [], {})


async def test_whole_run_caching_over_response_caching() -> None:
    calls = Calls()
    agent = weather_agent(calls)
    store = MemoryStore()
    first = await cached_agent_run(agent, "weather?", "runs", store=store)
    second = await cached_agent_run(agent, "weather?", "runs", store=store)
    assert second.cached and second.output == first.output
    assert calls.tools == ["Paris"]  # a whole-run hit skips the tools


# --- the key: what the model receives


def _request(prompt: str, *, call_id: str = "pyd_ai_1111") -> list[ModelMessage]:
    return [
        ModelRequest(parts=[UserPromptPart(prompt)]),
        ModelResponse(parts=[ToolCallPart("weather", {"city": "Paris"}, tool_call_id=call_id)]),
        ModelRequest(parts=[ToolReturnPart("weather", "sunny", tool_call_id=call_id)]),
    ]


def _params(**kwargs: Any) -> ModelRequestParameters:
    tool = ToolDefinition(name="weather", parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}})
    return ModelRequestParameters(function_tools=[tool], **kwargs)


def test_generated_tool_call_ids_do_not_change_the_key_but_provider_ids_do() -> None:
    model = TestModel()
    key = model_request_digest(model, _request("q"), None, _params())
    assert model_request_digest(model, _request("q", call_id="pyd_ai_2222"), None, _params()) == key
    assert model_request_digest(model, _request("q", call_id="call_abc"), None, _params()) != model_request_digest(
        model, _request("q", call_id="call_xyz"), None, _params()
    )


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "other"},
        {"settings": {"temperature": 0.5}},
        {"params": {"allow_text_output": False}},
        {"params": {"function_tools": []}},
        {"model": TestModel(custom_output_text="x")},
    ],
)
def test_each_part_of_the_request_is_in_the_key(change: dict[str, Any]) -> None:
    base = {"prompt": "q", "settings": {"temperature": 0.0}, "params": {}, "model": TestModel()}

    def key(**over: Any) -> str:
        spec = {**base, **over}
        params = _params() if not spec["params"] else ModelRequestParameters(**{"function_tools": _params().function_tools, **spec["params"]})
        return model_request_digest(spec["model"], _request(spec["prompt"]), spec["settings"], params)

    assert key(**change) != key()


def test_transport_settings_are_not_in_the_key() -> None:
    model = TestModel()
    assert model_request_digest(model, _request("q"), {"timeout": 5, "max_retries": 2}, _params()) == model_request_digest(
        model, _request("q"), {}, _params()
    )


# --- every backend, concurrency, retries, composition


async def test_every_store_serves_requests_and_streams(store: Any) -> None:
    calls = Calls()
    agent = weather_agent(calls, store=store)
    await agent.run("weather?")
    async with agent.run_stream("weather, streamed?") as stream:
        live = [d async for d in stream.stream_text(delta=True, debounce_by=None)]
    second = await agent.run("weather?")
    async with agent.run_stream("weather, streamed?") as stream:
        replayed = [d async for d in stream.stream_text(delta=True, debounce_by=None)]
    assert replayed == live == ["It ", "is ", "sunny", "."]
    assert cached_marks(second.all_messages()) == [True, True]
    assert len(calls.requests) == 4


async def test_concurrent_identical_requests_make_one_model_call() -> None:
    calls = Calls()
    agent = weather_agent(calls)
    results = await asyncio.gather(*(agent.run("weather?") for _ in range(10)))
    assert {r.output for r in results} == {"It is sunny."}
    assert calls.requests == ["UserPromptPart", "ToolReturnPart"]
    assert len(calls.tools) == 10


async def test_a_rate_limited_request_is_retried_alone_and_stored_once() -> None:
    failures = [ModelHTTPError(429, "m", body="slow down")]
    tools: list[str] = []

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1].parts[-1]
        if isinstance(last, ToolReturnPart):
            if failures:
                raise failures.pop()
            return ModelResponse(parts=[TextPart("done")])
        return ModelResponse(parts=[ToolCallPart("charge_card", {})])

    events: list[ExpenseEvent] = []
    recorder = type("R", (), {"record": lambda self, e: events.append(e)})()
    agent = Agent(
        FunctionModel(answer),
        capabilities=[ResponseCache(task_name="charge", store=MemoryStore(), initial_wait=0.01, expense_recorder=recorder)],
    )

    @agent.tool_plain
    def charge_card() -> str:
        tools.append("charged")
        return "ok"

    assert (await agent.run("pay")).output == "done"
    assert tools == ["charged"]  # the retry resent the failed request only, not the run
    assert [e.failed_attempts for e in events] == [0, 1]


async def test_whole_run_streaming_over_response_caching_records_both() -> None:
    calls = Calls()
    store = MemoryStore()
    agent = weather_agent(calls, store=store)
    async with cached_agent_run_stream(agent, "weather?", "runs", store=store) as stream:
        live = [d async for d in stream.stream_text(delta=True, debounce_by=None)]
    async with cached_agent_run_stream(agent, "weather?", "runs", store=store) as stream:
        assert stream.cached and [d async for d in stream.stream_text(delta=True, debounce_by=None)] == live
    async with agent.run_stream("weather?") as stream:  # each request was recorded too
        assert [d async for d in stream.stream_text(delta=True, debounce_by=None)] == live
    assert len(calls.requests) == 2


async def test_the_pytest_plugin_scope_points_requests_at_its_store_and_mode() -> None:
    recordings = MemoryStore()
    calls = Calls()
    with scoped(recordings, "read_write") as scope:
        await weather_agent(calls, store=MemoryStore()).run("weather?")
    assert len(scope.recorded) == 2 and len(await recordings.keys("pyai_caching:")) == 2
    with scoped(recordings, "replay") as scope:
        await weather_agent(calls, store=MemoryStore()).run("weather?")
        with pytest.raises(CacheMissError):
            await weather_agent(calls).run("something new")
    assert len(scope.replayed) == 2 and len(scope.missing) == 1
    assert len(calls.requests) == 2


def test_only_transport_settings_key_as_no_settings() -> None:
    model = TestModel()
    assert model_request_digest(model, _request("q"), {"max_retries": 0}, _params()) == model_request_digest(
        model, _request("q"), None, _params()
    )


async def test_recording_an_unchanged_response_again_rewrites_no_fixture_file(tmp_path: Any) -> None:
    from pyai_caching import FixtureStore

    fixtures = FixtureStore(tmp_path)
    calls = Calls()
    await weather_agent(calls, store=fixtures).run("weather?")
    files = sorted(tmp_path.rglob("*.json"))
    before = {f: f.read_bytes() for f in files}
    await weather_agent(calls, store=fixtures, mode="refresh").run("weather?")
    assert len(calls.requests) == 4 and len(files) == 2
    assert {f: f.read_bytes() for f in sorted(tmp_path.rglob("*.json"))} == before


@pytest.mark.parametrize("settings", [None, {"request_timeout": 30.0}])
@pytest.mark.parametrize("wrapping", ["FallbackModel", "ModelFallback"])
async def test_requests_through_fallbacks_and_request_deadlines_are_recorded(settings: Any, wrapping: str) -> None:
    from fallbacks import behind_a_fallback

    calls = Calls()
    base = weather_agent(calls)
    model, fallback = behind_a_fallback(wrapping, base.model, TestModel())  # type: ignore[arg-type]
    capabilities = [*fallback, ResponseCache(task_name="weather", store=MemoryStore())]
    agent = Agent(model, capabilities=capabilities, model_settings=settings, tools=[base._function_toolset.tools["weather"]])
    chunks = []
    for _ in range(2):
        async with agent.run_stream("weather?") as stream:
            chunks.append([d async for d in stream.stream_text(delta=True, debounce_by=None)])
    assert chunks[0] == chunks[1] == ["It ", "is ", "sunny", "."]
    assert len(calls.requests) == 2


@pytest.mark.parametrize("how", ["break", "raise"])
async def test_a_stream_left_part_way_is_reported_as_spent(how: str) -> None:
    events: list[ExpenseEvent] = []
    recorder = type("R", (), {"record": lambda self, e: events.append(e)})()
    calls = Calls()
    agent = weather_agent(calls, expense_recorder=recorder)
    with pytest.raises(ValueError) if how == "raise" else contextlib.nullcontext():
        async with agent.run_stream("weather?") as stream:
            async for _ in stream.stream_text(delta=True, debounce_by=None):
                if how == "raise":
                    raise ValueError("the consumer failed")
                break
    for _ in range(50):  # a stream being closed reports in the background
        if len(events) == 2:
            break
        await asyncio.sleep(0.01)
    assert [(e.cached, e.failed) for e in events] == [(False, False), (False, True)]
    assert events[1].cost and events[1].cost > 0


@pytest.mark.parametrize("given", ["plain", "wrapped", "dynamic"])
@pytest.mark.parametrize("front", ["ResponseCache", "cached_agent_run"])
async def test_a_model_fallback_however_given_falls_back_at_once(given: str, front: str) -> None:
    capabilities_module = pytest.importorskip("pydantic_ai.capabilities")
    if not hasattr(capabilities_module, "ModelFallback"):
        pytest.skip("ModelFallback arrived after this PydanticAI")
    primary: list[str] = []

    def broken(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        primary.append("called")
        raise ModelHTTPError(503, "primary", body="overloaded")

    def backup(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("from backup")])

    fallback = capabilities_module.ModelFallback(FunctionModel(backup))
    capability: Any = fallback
    if given == "wrapped":
        capability = capabilities_module.WrapperCapability(wrapped=fallback)
    elif given == "dynamic":
        capability = lambda ctx: fallback  # noqa: E731 - a dynamic capability
    caches = [ResponseCache(task_name="t", store=MemoryStore(), initial_wait=5.0)] if front == "ResponseCache" else []
    agent = Agent(FunctionModel(broken), capabilities=[capability, *caches])
    if front == "ResponseCache":
        output = (await agent.run("q")).output
    else:
        output = (await cached_agent_run(agent, "q", "t", store=MemoryStore(), initial_wait=5.0)).output
    assert output == "from backup" and primary == ["called"]


async def test_a_whole_run_over_per_request_hits_spends_nothing_and_streams_its_chunks() -> None:
    calls = Calls()
    agent = weather_agent(calls)
    await agent.run("weather?")
    async with agent.run_stream("weather, streamed?") as stream:
        await stream.get_output()
    run = await cached_agent_run(agent, "weather?", "runs", store=MemoryStore())
    assert not run.cached and run.cost == 0.0  # every response came from the per-request cache
    store = MemoryStore()
    chunks = []
    for _ in range(2):
        async with cached_agent_run_stream(agent, "weather, streamed?", "runs", store=store) as streamed:
            chunks.append([d async for d in streamed.stream_text(delta=True, debounce_by=None)])
    assert streamed.cached and chunks[0] == chunks[1] == ["It ", "is ", "sunny", "."]
    assert len(calls.requests) == 4
