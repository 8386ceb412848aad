"""Cached streaming, per-request caching and event replay, runnable offline: `python examples/streaming.py`.

The model is a PydanticAI `FunctionModel` that streams its answer in chunks (and asks for a tool first); the store
is an embedded `LocalStore` in a temporary directory.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

from pyai_caching import LocalStore, ResponseCache, cached_agent_run, cached_agent_run_stream

model_calls = tool_calls = 0


def weather_model() -> FunctionModel:
    """Asks for the `weather` tool, then streams what it returned in four chunks."""

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        global model_calls
        model_calls += 1
        last = messages[-1].parts[-1]
        if isinstance(last, ToolReturnPart):
            return ModelResponse(parts=[TextPart(f"In Paris it is {last.content}.")])
        return ModelResponse(parts=[ToolCallPart("weather", {"city": "Paris"})])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        global model_calls
        model_calls += 1
        last = messages[-1].parts[-1]
        if isinstance(last, ToolReturnPart):
            for chunk in ("In Paris ", "it is ", f"{last.content}", "."):
                await asyncio.sleep(0.05)  # a model takes its time
                yield chunk
        else:
            yield {0: DeltaToolCall(name="weather", json_args='{"city": "Paris"}')}

    return FunctionModel(answer, stream_function=stream, model_name="gpt-4o-mini")


async def _chunks(*chunks: str) -> Any:
    for chunk in chunks:
        yield chunk


def with_weather_tool(agent: Agent[None, str]) -> Agent[None, str]:
    @agent.tool_plain
    def weather(city: str) -> str:
        global tool_calls
        tool_calls += 1
        return "sunny"

    return agent


async def main(root: Path) -> None:
    store = LocalStore(root)
    agent = with_weather_tool(Agent(weather_model()))

    # Cached streaming: a miss streams live and records the deltas; a hit replays them in the same chunks.
    for attempt in ("miss", "hit"):
        async with cached_agent_run_stream(agent, "Weather in Paris?", "weather", store=store) as result:
            deltas = [delta async for delta in result.stream_text(delta=True, debounce_by=None)]
        print(f"stream {attempt}: cached {result.cached}, deltas {deltas}")
    # pace=1.0 replays at the recorded speed (for demos).
    async with cached_agent_run_stream(agent, "Weather in Paris?", "weather", store=store, pace=1.0) as result:
        print(f"stream paced: {[text async for text in result.stream_text(debounce_by=None)][-1]!r}")
    # A run both agent.run and agent.run_stream answer alike (one response, no tools) shares its entry.
    plain = Agent(FunctionModel(stream_function=lambda m, i: _chunks("Bonjour ", "Paris."), model_name="gpt-4o-mini"))
    async with cached_agent_run_stream(plain, "Greet Paris", "greet", store=store) as result:
        await result.get_output()
    shared = await cached_agent_run(plain, "Greet Paris", "greet", store=store)
    print(f"stream shared with cached_agent_run: cached {shared.cached}, output {shared.output!r}")

    # event_stream_handler: a hit replays the recorded events to it.
    for attempt in ("miss", "hit"):
        kinds: list[str] = []

        async def handler(ctx: Any, events: Any) -> None:
            async for event in events:
                kinds.append(event.event_kind)

        await cached_agent_run(agent, "Weather today?", "weather", store=store, event_stream_handler=handler)
        print(f"events {attempt}: {len(kinds)} events, {kinds.count('function_tool_result')} tool result")

    # Per-request caching: the agent loop runs (tools too), each model request is answered from the store.
    global model_calls, tool_calls
    model_calls = tool_calls = 0
    cached = with_weather_tool(Agent(weather_model(), capabilities=[ResponseCache(task_name="requests", store=store)]))
    for _ in range(2):
        run = await cached.run("Weather tomorrow?")
    async with cached.run_stream("Weather tomorrow?") as streamed:
        replayed = await streamed.get_output()
    marks = [bool((m.metadata or {}).get("pyai_caching")) for m in run.all_messages() if isinstance(m, ModelResponse)]
    print(f"response cache: {tool_calls} tool runs, {model_calls} model calls, second run cached {marks}, "
          f"streamed {replayed!r}")
    await store.aclose()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="pyai_caching_streaming_") as directory:
        asyncio.run(main(Path(directory)))
