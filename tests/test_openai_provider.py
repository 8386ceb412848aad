"""The cache through PydanticAI's real `OpenAIChatModel` and the `openai` SDK, over HTTP to a local fake server:
what only real client code does (dated model names, cached-token usage, error mapping, tool calls, structured
output) is tested here."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError

from pyai_caching import MemoryStore, ModelCosts, cached_agent_run

from openai_server import FakeOpenAIServer, error_reply, openai_model, output_reply, text_reply, tool_call_reply, usage

SECRET = "sk-live-THIS-MUST-NEVER-BE-STORED-42"


def chat_requests(server: FakeOpenAIServer) -> int:
    return sum(r.path.endswith("/chat/completions") for r in server.requests)


async def test_miss_then_hit_over_http_and_no_secret_in_the_entry(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(text_reply("Paris.", usage=usage(prompt_tokens=1200, completion_tokens=10, cached_tokens=800)))
    store = MemoryStore()
    agent = Agent(openai_model(openai_server, api_key=SECRET))
    first = await cached_agent_run(agent, "Capital of France?", "geo", store=store)
    second = await cached_agent_run(agent, "Capital of France?", "geo", store=store)
    assert (first.output, second.output) == ("Paris.", "Paris.")
    assert (first.cached, second.cached) == (False, True) and chat_requests(openai_server) == 1
    assert first.model == "gpt-4o-mini-2024-07-18"  # the name the API answered with
    assert second.usage.cache_read_tokens == 800 and second.usage == first.usage
    assert openai_server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    (entry,) = [value for value, _ in store._entries.values()]
    assert SECRET.encode() not in entry and b"Bearer" not in entry
    assert first.cache_key is not None and SECRET not in first.cache_key


async def test_custom_costs_by_the_requested_name_price_a_dated_answer(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(text_reply("ok", usage=usage(prompt_tokens=1_000_000, completion_tokens=0)))
    agent = Agent(openai_model(openai_server))
    result = await cached_agent_run(
        agent, "hi", "price", store=MemoryStore(), custom_costs={"gpt-4o-mini": ModelCosts(7.0, 0.0)}
    )
    assert result.model == "gpt-4o-mini-2024-07-18"
    assert result.cost == pytest.approx(7.0)  # not the list price of gpt-4o-mini


async def test_a_rejected_request_is_neither_retried_nor_cached(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(error_reply(400, "Invalid 'messages'", "invalid_value"), text_reply("fine now"))
    store = MemoryStore()
    agent = Agent(openai_model(openai_server))
    with pytest.raises(ModelHTTPError):
        await cached_agent_run(agent, "hi", "bad", store=store, initial_wait=0.01)
    assert chat_requests(openai_server) == 1 and store._entries == {}
    assert (await cached_agent_run(agent, "hi", "bad", store=store)).output == "fine now"


async def test_a_server_error_is_retried_by_the_cache_and_then_cached(openai_server: FakeOpenAIServer) -> None:
    fast = {"retry-after-ms": "1"}
    openai_server.script(error_reply(503, "Busy", headers=fast), text_reply("recovered"))
    store = MemoryStore()
    agent = Agent(openai_model(openai_server, max_retries=2))
    result = await cached_agent_run(agent, "hi", "busy", store=store, initial_wait=0.01, max_wait=1)
    assert result.output == "recovered" and chat_requests(openai_server) == 2
    assert (await cached_agent_run(agent, "hi", "busy", store=store)).cached


class City(BaseModel):
    name: str
    population: int


async def test_structured_output_and_a_tool_loop_hit_faithfully(openai_server: FakeOpenAIServer) -> None:
    looked_up: list[str] = []
    openai_server.script(
        tool_call_reply("lookup", {"city": "Paris"}, call_id="call_1"),
        output_reply({"name": "Paris", "population": 2_100_000}),
    )
    agent = Agent(openai_model(openai_server), output_type=City)

    @agent.tool_plain
    def lookup(city: str) -> str:
        looked_up.append(city)
        return f"{city}: 2.1 million people"

    store = MemoryStore()
    first = await cached_agent_run(agent, "Tell me about Paris", "cities", store=store)
    second = await cached_agent_run(agent, "Tell me about Paris", "cities", store=store)
    assert first.output == second.output == City(name="Paris", population=2_100_000)
    assert second.cached and looked_up == ["Paris"] and chat_requests(openai_server) == 2
    assert [type(m).__name__ for m in second.all_messages()] == [type(m).__name__ for m in first.all_messages()]
    assert second.usage.requests == first.usage.requests == 2


async def test_a_streamed_run_over_sse_replays_its_chunks_without_a_request(openai_server: FakeOpenAIServer) -> None:
    from pyai_caching import cached_agent_run_stream

    openai_server.script(text_reply("The capital is Paris."))
    store = MemoryStore()
    agent = Agent(openai_model(openai_server, api_key=SECRET))
    seen = []
    for _ in range(2):
        async with cached_agent_run_stream(agent, "Capital of France?", "geo-stream", store=store) as result:
            seen.append([d async for d in result.stream_text(delta=True, debounce_by=None)])
    assert result.cached and seen[0] == seen[1] and len(seen[0]) > 1 and "".join(seen[0]) == "The capital is Paris."
    assert chat_requests(openai_server) == 1 and openai_server.requests[0].body["stream"] is True
    assert result.model == "gpt-4o-mini-2024-07-18"
    assert all(SECRET.encode() not in value for value, _ in store._entries.values())


async def test_response_cache_over_http_runs_the_tools_and_sends_each_request_once(openai_server: FakeOpenAIServer) -> None:
    from pyai_caching import ResponseCache

    looked_up: list[str] = []
    openai_server.script(
        tool_call_reply("lookup", {"city": "Paris"}, call_id="call_1"),
        output_reply({"name": "Paris", "population": 2_100_000}),
    )
    store = MemoryStore()
    agent = Agent(openai_model(openai_server, api_key=SECRET), output_type=City, capabilities=[ResponseCache(task_name="rc", store=store)])

    @agent.tool_plain
    def lookup(city: str) -> str:
        looked_up.append(city)
        return f"{city}: 2.1 million people"

    first = await agent.run("Tell me about Paris")
    second = await agent.run("Tell me about Paris")
    assert first.output == second.output == City(name="Paris", population=2_100_000)
    assert looked_up == ["Paris", "Paris"] and chat_requests(openai_server) == 2
    assert second.usage == first.usage
    assert all(SECRET.encode() not in value for value, _ in store._entries.values())
