"""The fake OpenAI server works through PydanticAI's real `OpenAIChatModel` and the real `openai` SDK."""

from __future__ import annotations

import sys

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent, ModelHTTPError, NativeOutput, RunContext
from pydantic_ai import exceptions as _px
from pydantic_ai import models
from pydantic_ai.models.openai import OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

from openai_server import (
    FakeOpenAIServer,
    error_reply,
    openai_model,
    output_reply,
    text_reply,
    tool_call_reply,
    usage,
)

CHAT = "/v1/chat/completions"


class City(BaseModel):
    name: str
    population: int


async def test_plain_run_reports_dated_model_usage_and_sends_the_key(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(text_reply("Hello!", usage=usage(prompt_tokens=120, completion_tokens=7, cached_tokens=100)))

    result = await Agent(openai_model(openai_server)).run("hi")

    assert result.output == "Hello!"
    assert result.response.model_name == "gpt-4o-mini-2024-07-18"
    request_usage = result.response.usage
    assert (request_usage.input_tokens, request_usage.output_tokens, request_usage.cache_read_tokens) == (120, 7, 100)
    [request] = openai_server.requests
    assert request.path == CHAT
    assert request.headers["authorization"] == "Bearer sk-test-SECRET"
    assert request.body["model"] == "gpt-4o-mini"
    assert request.body["messages"] == [{"role": "user", "content": "hi"}]


async def test_default_responder_echoes_and_can_be_replaced(openai_server: FakeOpenAIServer) -> None:
    agent = Agent(openai_model(openai_server))
    assert (await agent.run("ping")).output == "echo: ping"

    openai_server.respond_with(lambda request: text_reply(f"{len(request['messages'])} message(s)", model="custom-1"))
    result = await agent.run("ping")
    assert (result.output, result.response.model_name) == ("1 message(s)", "custom-1")


async def test_tool_call_round_trip(openai_server: FakeOpenAIServer) -> None:
    agent = Agent(openai_model(openai_server))
    calls: list[str] = []

    @agent.tool
    def weather(ctx: RunContext[None], city: str) -> str:
        calls.append(city)
        return f"sunny in {city}"

    openai_server.script(tool_call_reply("weather", {"city": "Paris"}, call_id="call_1"), text_reply("It is sunny."))
    result = await agent.run("Weather in Paris?")

    assert result.output == "It is sunny."
    assert calls == ["Paris"]
    first, second = (r.body for r in openai_server.requests)
    assert [t["function"]["name"] for t in first["tools"]] == ["weather"]
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny in Paris"}
    assert result.usage.requests == 2


async def test_structured_output_via_output_tool_and_native_json(openai_server: FakeOpenAIServer) -> None:
    model = openai_model(openai_server)
    openai_server.script(output_reply({"name": "Paris", "population": 2}))
    assert (await Agent(model, output_type=City).run("A city?")).output == City(name="Paris", population=2)
    assert openai_server.requests[-1].body["tools"][0]["function"]["name"] == "final_result"

    openai_server.script(output_reply({"name": "Rome", "population": 3}))
    result = await Agent(model, output_type=NativeOutput(City)).run("A city?")
    assert result.output == City(name="Rome", population=3)
    assert openai_server.requests[-1].body["response_format"]["type"] == "json_schema"


async def test_streamed_run(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(text_reply("streamed answer", usage=usage(cached_tokens=4)))
    async with Agent(openai_model(openai_server)).run_stream("hi") as stream:
        assert await stream.get_output() == "streamed answer"
    assert stream.usage.cache_read_tokens == 4
    assert openai_server.requests[-1].body["stream"] is True


async def test_rate_limit_surfaces_as_http_and_rate_limit_error_without_sdk_retries(
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.script(error_reply(429, "Slow down", "rate_limit_exceeded", {"Retry-After": "0"}))

    with pytest.raises(ModelHTTPError) as excinfo:
        await Agent(openai_model(openai_server, max_retries=0)).run("hi")

    error = excinfo.value
    assert (error.status_code, error.retry_after) == (429, 0.0)
    if hasattr(_px, "ModelRateLimitError"):  # the categories arrived in PydanticAI 2.59
        assert isinstance(error, _px.ModelRateLimitError) and error.provider_error_code == "rate_limit_exceeded"
    assert len(openai_server.requests) == 1


async def test_sdk_retries_429_and_5xx_then_succeeds(openai_server: FakeOpenAIServer) -> None:
    # `retry-after-ms: 1` keeps the retries fast; `Retry-After: 0` would fall back to the SDK's 0.5 s+ backoff.
    fast = {"retry-after-ms": "1"}
    openai_server.script(error_reply(429, "Slow down", headers=fast), error_reply(503, "Busy", headers=fast))

    result = await Agent(openai_model(openai_server, max_retries=2)).run("hi")

    assert result.output == "echo: hi"
    assert [r.headers["x-stainless-retry-count"] for r in openai_server.requests] == ["0", "1", "2"]


async def test_bad_request_is_not_retried(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(error_reply(400, "Invalid 'messages'", "invalid_value"))

    with pytest.raises(ModelHTTPError) as excinfo:
        await Agent(openai_model(openai_server, max_retries=2)).run("hi")

    if hasattr(_px, "ModelRequestRejectedError"):  # arrived in PydanticAI 2.62
        assert isinstance(excinfo.value, _px.ModelRequestRejectedError)
    assert excinfo.value.status_code == 400
    assert excinfo.value.body == {
        "message": "Invalid 'messages'", "type": "invalid_request_error", "param": None, "code": "invalid_value"
    }  # fmt: skip
    assert len(openai_server.requests) == 1


async def test_responses_api(openai_server: FakeOpenAIServer) -> None:
    model = OpenAIResponsesModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=openai_server.client()))
    openai_server.script(text_reply("from responses", usage=usage(cached_tokens=3)))

    result = await Agent(model).run("hi")

    assert (result.output, result.response.model_name) == ("from responses", "gpt-4o-mini-2024-07-18")
    assert result.response.usage.cache_read_tokens == 3
    assert openai_server.requests[-1].path == "/v1/responses"


async def test_requests_stay_blocked_outside_the_fixture_override(openai_server: FakeOpenAIServer) -> None:
    with models.override_allow_model_requests(False):
        with pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS"):
            await Agent(openai_model(openai_server)).run("hi")
    assert openai_server.requests == []


async def test_chat_completions_never_import_tiktoken(
    openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only `OpenAIEmbeddingModel.count_tokens` and the realtime models use tiktoken (which may download encodings).
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # any `import tiktoken` now raises ImportError
    agent = Agent(openai_model(openai_server))
    assert (await agent.run("hi")).output == "echo: hi"
    async with agent.run_stream("hi") as stream:
        assert await stream.get_output() == "echo: hi"
