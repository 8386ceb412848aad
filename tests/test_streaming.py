"""`cached_agent_run_stream` and `event_stream_handler`: a hit streams as the miss did."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturn,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

from pyai_caching import (
    CachedStreamedRunResult,
    CacheMissError,
    ConfigurationError,
    MemoryStore,
    ModelCosts,
    cached_agent_run,
    cached_agent_run_stream,
)

CHUNKS = ("It ", "is ", "sunny", ".")


class Counts:
    def __init__(self) -> None:
        self.requests = 0
        self.tools = 0


def with_weather_tool(model: FunctionModel, counts: Counts) -> Agent[None, str]:
    """An agent on `model` with a `weather` tool that counts its calls."""
    agent = Agent(model)

    @agent.tool_plain
    def weather(city: str) -> str:
        counts.tools += 1
        return "sunny"

    return agent


def weather_agent(counts: Counts, *, fail_after: int | None = None) -> Agent[None, str]:
    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        counts.requests += 1
        if isinstance(messages[-1].parts[-1], ToolReturnPart):
            return ModelResponse(parts=[TextPart("".join(CHUNKS))])
        return ModelResponse(parts=[ToolCallPart("weather", {"city": "Paris"})])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        counts.requests += 1
        if isinstance(messages[-1].parts[-1], ToolReturnPart):
            for index, chunk in enumerate(CHUNKS):
                if fail_after is not None and index == fail_after:
                    raise RuntimeError("connection reset")
                yield chunk
        else:
            yield {0: DeltaToolCall(name="weather", json_args='{"city": ')}
            yield {0: DeltaToolCall(json_args='"Paris"}')}

    return with_weather_tool(FunctionModel(answer, stream_function=stream), counts)


COSTS = {"function:answer:stream": ModelCosts(cost_per_million_input_tokens=1e6, cost_per_million_output_tokens=0)}


async def deltas(agent: Agent[None, Any], store: MemoryStore, **kwargs: Any) -> tuple[list[str], CachedStreamedRunResult[Any]]:
    async with cached_agent_run_stream(agent, "weather?", "stream", store=store, custom_costs=COSTS, **kwargs) as result:
        return [d async for d in result.stream_text(delta=True, debounce_by=None)], result


async def test_a_hit_streams_the_same_deltas_without_the_model_or_tools() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    live, miss = await deltas(agent, store)
    replayed, hit = await deltas(agent, store)
    assert live == replayed == list(CHUNKS)
    assert (counts.requests, counts.tools) == (2, 1)
    assert (miss.cached, hit.cached) == (False, True)
    assert miss.cost is not None and miss.cost > 0 and hit.cost == 0.0 and hit.saved_cost == miss.cost
    assert hit.usage == miss.usage
    assert hit.run_id != miss.run_id
    assert [type(m).__name__ for m in hit.all_messages()] == [type(m).__name__ for m in miss.all_messages()]
    assert hit.is_complete and hit.result.output == miss.result.output == "It is sunny."


async def test_snapshots_text_and_output_replay_as_they_streamed() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)

    async def read(how: str) -> list[Any]:
        async with cached_agent_run_stream(agent, "weather?", how, store=store) as result:
            if how == "response":
                return [[p.content for p in r.parts] async for r in result.stream_response(debounce_by=None)]
            if how == "text":
                return [t async for t in result.stream_text(debounce_by=None)]
            return [o async for o in result.stream_output(debounce_by=None)]

    for how in ("response", "text", "output"):
        live, replayed = await read(how), await read(how)
        assert replayed == live, how
        assert len(live) > 2
    assert counts.requests == 6


async def test_debounced_and_paced_replays() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    await deltas(agent, store)
    async with cached_agent_run_stream(agent, "weather?", "stream", store=store) as result:
        # replayed at once, a debounced stream arrives as one group
        assert [t async for t in result.stream_text(delta=True)] == ["It is sunny."]
    async with cached_agent_run_stream(agent, "weather?", "stream", store=store, pace=1000.0) as result:
        assert [t async for t in result.stream_text(delta=True, debounce_by=None)] == list(CHUNKS)
    async with cached_agent_run_stream(agent, "weather?", "stream", store=store) as result:
        assert await result.get_output() == "It is sunny."
        assert [t async for t in result.stream_text()] == ["It is sunny."]  # read already: the whole text, once
    assert counts.requests == 2


def plain_agent(counts: Counts, output_type: Any = str) -> Agent[None, Any]:
    """One model response, no tools: `agent.run` and `agent.run_stream` answer it alike."""

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        counts.requests += 1
        if info.output_tools:
            return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"city": "Paris", "summary": "sunny"})])
        return ModelResponse(parts=[TextPart("".join(CHUNKS))])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        counts.requests += 1
        if info.output_tools:
            yield {0: DeltaToolCall(name=info.output_tools[0].name, json_args='{"city": "Paris", "summary": "sunny"}')}
        else:
            for chunk in CHUNKS:
                yield chunk

    return Agent(FunctionModel(answer, stream_function=stream), output_type=output_type)


@pytest.mark.parametrize("output", ["text", "structured"])
async def test_stream_and_run_share_entries_both_ways_where_they_answer_alike(output: str) -> None:
    output_type = str if output == "text" else Forecast
    for first in ("run", "stream"):
        counts, store = Counts(), MemoryStore()
        agent = plain_agent(counts, output_type)

        async def run() -> tuple[Any, bool]:
            result = await cached_agent_run(agent, "weather?", "plain", store=store)
            return result.output, result.cached

        async def stream() -> tuple[Any, bool]:
            async with cached_agent_run_stream(agent, "weather?", "plain", store=store) as result:
                return await result.get_output(), result.cached

        answers = [await run(), await stream()] if first == "run" else [await stream(), await run()]
        assert answers[0][0] == answers[1][0] and [cached for _, cached in answers] == [False, True]
        assert counts.requests == 1


async def test_a_run_calling_tools_is_not_shared_between_stream_and_run() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    await deltas(agent, store)
    run = await cached_agent_run(agent, "weather?", "stream", store=store)
    assert not run.cached and run.output == "It is sunny."
    assert (await cached_agent_run(agent, "weather?", "stream", store=store)).cached
    replayed, hit = await deltas(agent, store)
    assert hit.cached and replayed == list(CHUNKS)  # the stream's own entry, still its own chunks
    assert counts.requests == 4


async def test_a_stream_left_part_way_is_not_stored() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    async with cached_agent_run_stream(agent, "weather?", "stream", store=store) as result:
        async for _ in result.stream_text(delta=True, debounce_by=None):
            break
    assert await store.keys("pyai_caching:v2:stream:") == []
    _, again = await deltas(agent, store)
    assert not again.cached and counts.requests == 4


async def test_a_stream_failing_part_way_is_not_stored() -> None:
    counts, store = Counts(), MemoryStore()
    with pytest.raises(RuntimeError, match="connection reset"):
        await deltas(weather_agent(counts, fail_after=2), store)
    assert await store.keys("pyai_caching:v2:stream:") == []


async def test_a_cancelled_stream_is_not_stored() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    started = asyncio.Event()

    async def read() -> None:
        async with cached_agent_run_stream(agent, "weather?", "stream", store=store) as result:
            async for _ in result.stream_text(delta=True, debounce_by=None):
                started.set()
                await asyncio.sleep(10)

    task = asyncio.create_task(read())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.keys("pyai_caching:v2:stream:") == []


class Forecast(BaseModel):
    city: str
    summary: str


async def test_structured_output_streams_partials_then_the_output() -> None:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        tool = info.output_tools[0].name
        for piece in ('{"city": "Par', 'is", "summary": "sun', 'ny"}'):
            yield {0: DeltaToolCall(name=tool if piece.startswith("{") else None, json_args=piece)}

    agent = Agent(FunctionModel(stream_function=stream), output_type=Forecast)
    store = MemoryStore()
    outputs = []
    for _ in range(2):
        async with cached_agent_run_stream(agent, "weather?", "forecast", store=store) as result:
            outputs.append([o async for o in result.stream_output(debounce_by=None)])
    assert outputs[0][-1] == outputs[1][-1] == Forecast(city="Paris", summary="sunny")
    assert result.cached and all(isinstance(o, Forecast) for o in outputs[1])
    assert len(outputs[1]) > 1  # partial outputs came before the full one
    with pytest.raises(UserError, match="text"):
        async with cached_agent_run_stream(agent, "weather?", "forecast", store=store) as result:
            [t async for t in result.stream_text()]


async def test_each_hit_is_the_callers_own() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    await deltas(agent, store)
    _, first = await deltas(agent, store)
    first.all_messages().append(first.all_messages()[0])
    first.result.all_messages()[-1].parts.clear()
    _, second = await deltas(agent, store)
    assert len(second.all_messages()) == 4 and second.all_messages()[-1].parts


async def test_replay_mode_raises_before_any_model_call() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    with pytest.raises(CacheMissError):
        await deltas(agent, store, mode="replay")
    assert counts.requests == 0
    await deltas(agent, store)
    replayed, hit = await deltas(agent, store, mode="replay")
    assert hit.cached and replayed == list(CHUNKS)


async def test_bad_arguments_are_rejected_before_any_model_call() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    for bad in ({"pace": 0}, {"pace": "fast"}, {"mode": "sometimes"}):
        with pytest.raises((ValueError, ConfigurationError)):
            await deltas(agent, store, **bad)
    with pytest.raises(ValueError):
        async with cached_agent_run_stream(agent, "weather?", "", store=store):
            pass
    assert counts.requests == 0


# --- event_stream_handler on cached_agent_run


async def test_a_hit_replays_the_events_to_the_handler_with_the_callers_run() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    seen: list[list[tuple[str, str]]] = []
    results = []
    for _ in range(2):
        got: list[tuple[str, str]] = []

        async def handler(ctx: Any, events: Any) -> None:
            async for event in events:
                got.append((type(event).__name__, ctx.run_id))

        results.append(await cached_agent_run(agent, "weather?", "events", store=store, event_stream_handler=handler))
        seen.append(got)
    assert results[1].cached and counts.requests == 2
    assert [name for name, _ in seen[1]] == [name for name, _ in seen[0]]
    assert "FunctionToolResultEvent" in [name for name, _ in seen[1]]
    assert {run_id for _, run_id in seen[1]} == {results[1].run_id}


async def test_a_hit_recorded_without_a_handler_warns(caplog: pytest.LogCaptureFixture) -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    await cached_agent_run(agent, "weather?", "events-later", store=store)

    async def handler(ctx: Any, events: Any) -> None:
        async for _ in events:
            pass

    result = await cached_agent_run(agent, "weather?", "events-later", store=store, event_stream_handler=handler)
    assert result.cached and "recorded without an event_stream_handler" in caplog.text


async def test_a_streamed_hit_replays_the_events_to_the_handler() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    seen: list[list[str]] = []
    for _ in range(2):
        got: list[str] = []

        async def handler(ctx: Any, events: Any, got: list[str] = got) -> None:
            async for event in events:
                got.append(type(event).__name__)

        await deltas(agent, store, event_stream_handler=handler)
        seen.append(got)
    assert seen[0] == seen[1] and "FunctionToolResultEvent" in seen[0]
    assert counts.requests == 2


async def test_a_response_changed_by_a_capability_replays_as_the_run_saw_it() -> None:
    from dataclasses import dataclass, replace

    from pydantic_ai.capabilities import AbstractCapability

    @dataclass
    class Shout(AbstractCapability[Any]):
        async def after_model_request(self, ctx: Any, *, request_context: Any, response: ModelResponse) -> ModelResponse:
            parts = [replace(p, content=p.content.upper()) if isinstance(p, TextPart) else p for p in response.parts]
            return replace(response, parts=parts)

    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    first = await deltas(agent, store, capabilities=[Shout()])
    second = await deltas(agent, store, capabilities=[Shout()])
    assert second[1].cached and second[1].result.output == first[1].result.output
    assert second[0] == first[0] == list(CHUNKS)  # what streamed live streams again
    responses = [[m.parts for m in r.all_messages() if isinstance(m, ModelResponse)] for _, r in (first, second)]
    assert responses[0] == responses[1]


def text_stream_model(chunks: tuple[str, ...], counts: Counts) -> FunctionModel:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        counts.requests += 1
        for chunk in chunks:
            yield chunk

    return FunctionModel(stream_function=stream)


@pytest.mark.parametrize("settings", [None, {"request_timeout": 30.0}])
@pytest.mark.parametrize("wrapping", ["FallbackModel", "ModelFallback"])
async def test_streams_through_fallbacks_and_request_deadlines_are_recorded(settings: Any, wrapping: str) -> None:
    from fallbacks import behind_a_fallback

    counts, store = Counts(), MemoryStore()
    model, capabilities = behind_a_fallback(wrapping, text_stream_model(CHUNKS, counts), text_stream_model(("backup",), Counts()))
    agent = Agent(model, capabilities=capabilities, model_settings=settings)
    live, miss = await deltas(agent, store)
    replayed, hit = await deltas(agent, store)
    assert live == replayed == list(CHUNKS)
    assert (miss.cached, hit.cached, counts.requests) == (False, True, 1)


async def test_what_a_miss_caller_does_to_its_result_is_not_stored() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    async with cached_agent_run_stream(agent, "weather?", "stream", store=store) as result:
        assert await result.get_output() == "It is sunny."
        result.all_messages()[-1].parts[0].content = "tampered"  # type: ignore[union-attr]
        result.all_messages().append(result.all_messages()[0])
    async with cached_agent_run_stream(agent, "weather?", "stream", store=store) as hit:
        assert hit.cached and await hit.get_output() == "It is sunny."
        assert len(hit.all_messages()) == 4 and hit.all_messages()[-1].parts[0].content == "It is sunny."  # type: ignore[union-attr]


async def test_a_miss_cancelled_with_cancel_is_not_stored_and_does_not_raise() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    async with cached_agent_run_stream(agent, "weather?", "stream", store=store) as result:
        async for _ in result.stream_text(delta=True, debounce_by=None):
            await result.cancel()
            break
        assert result.cancelled
    assert await store.keys("pyai_caching:v2:stream:") == []


async def test_events_with_no_copy_never_fail_the_run() -> None:
    import threading

    async def answer(messages: list[ModelMessage], info: AgentInfo) -> Any:
        if isinstance(messages[-1].parts[-1], ToolReturnPart):
            yield "done"
        else:
            yield {0: DeltaToolCall(name="connect", json_args="{}")}

    agent = Agent(FunctionModel(stream_function=answer))

    @agent.tool_plain
    def connect() -> ToolReturn:
        return ToolReturn(return_value="ok", metadata={"lock": threading.Lock()})

    async def handler(ctx: Any, events: Any) -> None:
        async for _ in events:
            pass

    result = await cached_agent_run(agent, "go", "no-copy", store=MemoryStore(), event_stream_handler=handler)
    assert result.output == "done"


def chatty_agent(counts: Counts) -> Agent[None, str]:
    """Says "Let me check." while calling a tool: `agent.run` runs the tool and answers; `agent.run_stream` ends at
    the text."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        counts.requests += 1
        if isinstance(messages[-1].parts[-1], ToolReturnPart):
            yield "It is sunny."
        else:
            yield "Let me check. "
            yield {1: DeltaToolCall(name="weather", json_args='{"city": "Paris"}')}

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        counts.requests += 1
        if isinstance(messages[-1].parts[-1], ToolReturnPart):
            return ModelResponse(parts=[TextPart("It is sunny.")])
        return ModelResponse(parts=[TextPart("Let me check. "), ToolCallPart("weather", {"city": "Paris"})])

    return with_weather_tool(FunctionModel(answer, stream_function=stream), counts)


@pytest.mark.parametrize("first", ["run", "stream"])
async def test_run_and_stream_never_answer_each_other_with_what_the_other_would_not_say(first: str) -> None:
    counts, store = Counts(), MemoryStore()
    agent = chatty_agent(counts)

    async def run() -> tuple[str, bool]:
        result = await cached_agent_run(agent, "weather?", "chatty", store=store)
        return result.output, result.cached

    async def stream() -> tuple[str, bool]:
        async with cached_agent_run_stream(agent, "weather?", "chatty", store=store) as result:
            return await result.get_output(), result.cached

    order = [run, stream] if first == "run" else [stream, run]
    answers = [await call() for call in order] + [await call() for call in order]
    expected = {run: "It is sunny.", stream: "Let me check. "}
    assert [a for a, _ in answers] == [expected[c] for c in order * 2]
    assert [cached for _, cached in answers] == [False, False, True, True]


async def test_snapshots_match_live_when_a_part_follows_text() -> None:
    from pydantic_ai.messages import ThinkingPart  # noqa: F401 - the part the stream ends with

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        from pydantic_ai.models.function import DeltaThinkingPart

        yield "It "
        yield "is sunny."
        yield {1: DeltaThinkingPart(content="that was easy")}

    agent = Agent(FunctionModel(stream_function=stream))
    store = MemoryStore()
    seen = []
    for _ in range(2):
        async with cached_agent_run_stream(agent, "weather?", "parts", store=store) as result:
            seen.append([[type(p).__name__ for p in r.parts] async for r in result.stream_response(debounce_by=None)])
    assert result.cached and seen[0] == seen[1]
    assert ["TextPart", "ThinkingPart"] in seen[0]


async def test_with_an_output_function_a_hit_streams_the_final_output_only() -> None:
    from pydantic_ai.output import TextOutput

    def shout(text: str) -> str:
        return text.upper()

    agent = Agent(text_stream_model(CHUNKS, Counts()), output_type=TextOutput(shout))
    store = MemoryStore()
    outputs = []
    for _ in range(2):
        async with cached_agent_run_stream(agent, "weather?", "shout", store=store) as result:
            outputs.append([o async for o in result.stream_output(debounce_by=None)])
    assert result.cached and outputs[1] == ["IT IS SUNNY."] and outputs[0][-1] == "IT IS SUNNY."


async def test_what_a_miss_caller_edits_while_streaming_is_not_stored() -> None:
    counts, store = Counts(), MemoryStore()
    agent = plain_agent(counts)
    async with cached_agent_run_stream(agent, "weather?", "edits", store=store) as result:
        result.all_messages()[0].parts[0].content = "edited prompt"  # type: ignore[union-attr]
        async for response in result.stream_response(debounce_by=None):
            response.parts[0] = TextPart("edited answer")
    async with cached_agent_run_stream(agent, "weather?", "edits", store=store) as hit:
        assert hit.cached and await hit.get_output() == "It is sunny."
        assert [p.content for m in hit.all_messages() for p in m.parts] == ["weather?", "It is sunny."]  # type: ignore[union-attr]


async def test_a_capability_rewriting_the_event_stream_streams_uncached() -> None:
    import dataclasses as dc

    capabilities = pytest.importorskip("pydantic_ai.capabilities")
    if not hasattr(capabilities, "ProcessEventStream"):
        pytest.skip("ProcessEventStream arrived after this PydanticAI")
    from pydantic_ai.messages import PartDeltaEvent, TextPartDelta

    async def redact(ctx: Any, events: Any) -> Any:
        async for event in events:
            if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                event = dc.replace(event, delta=dc.replace(event.delta, content_delta=event.delta.content_delta.replace("sunny", "*****")))
            yield event

    counts, store = Counts(), MemoryStore()
    agent = Agent(text_stream_model(CHUNKS, counts), capabilities=[capabilities.ProcessEventStream(redact)])
    seen = [await deltas(agent, store) for _ in range(2)]
    assert [d for d, _ in seen] == [["It ", "is ", "*****", "."]] * 2
    assert not any(r.cached for _, r in seen) and counts.requests == 2


async def test_stream_text_follows_the_output_schema_on_a_hit() -> None:
    from pydantic_ai.output import TextOutput

    def length(text: str) -> int:
        return len(text)

    agent = Agent(text_stream_model(CHUNKS, Counts()), output_type=TextOutput(length))
    store = MemoryStore()
    texts = []
    for _ in range(2):
        async with cached_agent_run_stream(agent, "weather?", "length", store=store) as result:
            texts.append([t async for t in result.stream_text(debounce_by=None)])
    assert result.cached and texts[0] == texts[1] and texts[1][-1] == "It is sunny."
    assert result.result.output == len("It is sunny.")


async def test_a_streamed_run_ending_on_deferred_tools_read_through_result_is_stored() -> None:
    from pydantic_ai import DeferredToolRequests
    from pydantic_ai.exceptions import ApprovalRequired

    counts = Counts()

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        counts.requests += 1
        yield {0: DeltaToolCall(name="delete", json_args='{"path": "x"}', tool_call_id="call_1")}

    agent = Agent(FunctionModel(stream_function=stream), output_type=[str, DeferredToolRequests])

    @agent.tool_plain
    def delete(path: str) -> str:
        raise ApprovalRequired

    store = MemoryStore()
    for _ in range(2):
        async with cached_agent_run_stream(agent, "clean up", "deferred", store=store) as result:
            assert isinstance(result.result.output, DeferredToolRequests)
    assert result.cached and counts.requests == 1


async def test_output_validators_see_the_partial_text_on_a_hit_as_live() -> None:
    agent = Agent(text_stream_model(CHUNKS, Counts()))

    @agent.output_validator
    def shout(ctx: Any, text: str) -> str:
        return text.upper()

    store = MemoryStore()
    seen = []
    for _ in range(2):
        async with cached_agent_run_stream(agent, "weather?", "validated", store=store) as result:
            seen.append(([t async for t in result.stream_text(debounce_by=None)], result.cached))
    assert seen[0][0] == seen[1][0] and seen[1][0][-1] == "IT IS SUNNY." and seen[1][1]


async def test_a_stream_read_to_its_end_is_kept_when_the_callers_code_then_raises() -> None:
    counts, store = Counts(), MemoryStore()
    agent = plain_agent(counts)
    with pytest.raises(RuntimeError):
        async with cached_agent_run_stream(agent, "weather?", "raises", store=store) as result:
            await result.get_output()
            raise RuntimeError("the caller's own bug")
    async with cached_agent_run_stream(agent, "weather?", "raises", store=store) as again:
        assert await again.get_output() == "It is sunny." and again.cached
    assert counts.requests == 1


async def test_a_refresh_replaces_what_streams_are_answered_with() -> None:
    answers = ["old answer"]

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        if answers[0] == "old answer" or isinstance(messages[-1].parts[-1], ToolReturnPart):
            yield answers[0]
        else:
            yield {0: DeltaToolCall(name="look", json_args="{}")}

    agent = Agent(FunctionModel(stream_function=stream))

    @agent.tool_plain
    def look() -> str:
        return "looked"

    store = MemoryStore()

    async def ask(mode: str) -> tuple[str, bool, str | None]:
        async with cached_agent_run_stream(agent, "q", "refresh", store=store, mode=mode) as result:  # type: ignore[arg-type]
            return await result.get_output(), result.cached, result.cache_key

    assert (await ask("read_write"))[:2] == ("old answer", False)
    answers[0] = "new answer"  # now answered after a tool call: a stream-only entry
    refreshed = await ask("refresh")
    assert refreshed[:2] == ("new answer", False)
    for mode in ("read_write", "replay"):
        again = await ask(mode)
        assert again == ("new answer", True, refreshed[2])  # and the miss named the key its entry is under
    assert refreshed[2] in await store.keys("pyai_caching:v2:refresh:")


async def test_stream_response_after_the_stream_was_read_yields_the_final_response_once() -> None:
    counts, store = Counts(), MemoryStore()
    agent = plain_agent(counts)
    seen = []
    for _ in range(2):
        async with cached_agent_run_stream(agent, "weather?", "reread", store=store) as result:
            await result.get_output()
            seen.append([r.parts for r in [x async for x in result.stream_response(debounce_by=None)]])
    assert result.cached and seen[0] == seen[1] == [[TextPart("It is sunny.")]]


async def test_a_handler_on_a_hit_sees_each_step_as_it_was() -> None:
    counts, store = Counts(), MemoryStore()
    agent = weather_agent(counts)
    seen: list[list[tuple[int, int, int]]] = []
    for _ in range(2):
        got: list[tuple[int, int, int]] = []

        async def handler(ctx: Any, events: Any, got: list[tuple[int, int, int]] = got) -> None:
            got.append((len(ctx.messages), ctx.usage.requests, getattr(ctx, "run_step", 0)))
            async for _ in events:
                pass

        assert (await cached_agent_run(agent, "weather?", "steps", store=store, event_stream_handler=handler)).output
        seen.append(got)
    assert seen[0] == seen[1] and len({n for n, _, _ in seen[1]}) > 1  # not the final state every time


async def test_before_a_hit_is_read_it_stands_where_a_live_stream_would() -> None:
    counts, store = Counts(), MemoryStore()
    agent = plain_agent(counts)
    states = []
    for _ in range(2):
        async with cached_agent_run_stream(agent, "weather?", "unread", store=store) as result:
            with pytest.raises(UserError):
                result.result  # noqa: B018 - still streaming
            states.append(([type(m).__name__ for m in result.all_messages()], [p.content for p in result.response.parts]))  # type: ignore[union-attr]
            await result.get_output()
            assert len(result.all_messages()) == 2 and result.result.output == "It is sunny."
    assert result.cached and states[0] == states[1]
    assert states[1][0] == ["ModelRequest"]


async def test_a_stream_miss_never_replaces_the_entry_of_a_run() -> None:
    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if isinstance(messages[-1].parts[-1], ToolReturnPart):
            return ModelResponse(parts=[TextPart("run answer after tool")])
        return ModelResponse(parts=[ToolCallPart("look", {})])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        yield "stream answer"

    agent = Agent(FunctionModel(answer, stream_function=stream))

    @agent.tool_plain
    def look() -> str:
        return "looked"

    store = MemoryStore()
    assert (await cached_agent_run(agent, "q", "kept", store=store)).output == "run answer after tool"
    async with cached_agent_run_stream(agent, "q", "kept", store=store) as result:
        assert await result.get_output() == "stream answer" and not result.cached
    again = await cached_agent_run(agent, "q", "kept", store=store)
    assert again.cached and again.output == "run answer after tool"
    async with cached_agent_run_stream(agent, "q", "kept", store=store) as hit:
        assert hit.cached and await hit.get_output() == "stream answer" and hit.cache_key == result.cache_key
