"""A miss that explains itself: `explain(...)` and replay's `CacheMissError` name the nearest recording of the
task and what differs, in words, for each kind of difference."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import CacheMissError, Explanation, MemoryStore, RedisStore, cached_agent_run, explain, explain_sync
from pyai_caching._codec import read_manifest


def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart("ok")])


def make_agent(*, name: str = "gpt-4o-mini", instructions: str = "Be brief.", **kwargs: Any) -> Agent[None, Any]:
    return Agent(FunctionModel(answer, model_name=name), instructions=instructions, **kwargs)


def with_search(agent: Agent[None, Any], *, limit_param: bool) -> Agent[None, Any]:
    if limit_param:

        @agent.tool_plain
        def search(query: str, limit: int = 5) -> str:
            """Search the docs."""
            return query

    else:

        @agent.tool_plain
        def search(query: str) -> str:  # type: ignore[no-redef]
            """Search the docs."""
            return query

    return agent


async def recorded(store: MemoryStore, agent: Agent[None, Any], prompt: str = "q", **kwargs: Any) -> str:
    return (await cached_agent_run(agent, prompt, "support", store=store, **kwargs)).cache_key  # type: ignore[return-value]


async def test_a_recorded_call_is_said_to_be_answered() -> None:
    store = MemoryStore()
    await recorded(store, make_agent())
    explanation = await explain(make_agent(), "q", "support", store=store)
    assert explanation.recorded
    assert "answered from it" in str(explanation)


async def test_a_task_without_recordings_says_so() -> None:
    explanation = await explain(make_agent(), "q", "support", store=MemoryStore())
    assert not explanation.recorded and explanation.nearest is None
    assert str(explanation) == "task 'support': no recording for this call (the task has no recordings in this store)"


@pytest.mark.parametrize(
    ("recorded_with", "explained_with", "phrase"),
    [
        ({"model_settings": {"temperature": 0.0}}, {"model_settings": {"temperature": 0.7}}, "model_settings.temperature 0.0 -> 0.7"),
        ({}, {"model_settings": {"seed": 42}}, "model_settings.seed added (42)"),
        ({"model_settings": {"max_tokens": 100}}, {}, "model_settings.max_tokens removed (was 100)"),
        ({}, {"model": FunctionModel(answer, model_name="gpt-4o")}, "model function:gpt-4o-mini -> function:gpt-4o"),
        ({"instructions": "Answer in French."}, {"instructions": "Answer in German."}, "instructions (run argument) changed"),
        ({}, {"output_type": int}, "output schema changed"),
        ({}, {"key_extra": {"tenant": "acme"}}, "key_extra changed"),
    ],
)
async def test_each_kind_of_difference_is_said_in_words(recorded_with: dict[str, Any], explained_with: dict[str, Any], phrase: str) -> None:
    store = MemoryStore()
    await recorded(store, make_agent(), **recorded_with)
    explanation = await explain(make_agent(), "q", "support", store=store, **explained_with)
    assert not explanation.recorded
    assert explanation.differences == (phrase,)
    assert f"  - {phrase}" in str(explanation)


async def test_the_agents_instructions() -> None:
    store = MemoryStore()
    await recorded(store, make_agent(instructions="Be brief."))
    explanation = await explain(make_agent(instructions="Be thorough."), "q", "support", store=store)
    assert explanation.differences == ("instructions changed",)


async def test_tool_changes_are_named_by_tool() -> None:
    store = MemoryStore()
    await recorded(store, with_search(make_agent(), limit_param=False))
    changed = await explain(with_search(make_agent(), limit_param=True), "q", "support", store=store)
    assert changed.differences == ("tool `search`: parameters schema changed",)
    removed = await explain(make_agent(), "q", "support", store=store)
    assert removed.differences == ("tool `search` removed",)


async def test_the_prompt_and_history_messages_are_compared_one_by_one() -> None:
    store = MemoryStore()
    history = [
        ModelRequest(parts=[UserPromptPart("Hi")]),
        ModelResponse(parts=[TextPart("Hello! How can I help?")]),
        ModelRequest(parts=[UserPromptPart("My order is late")]),
        ModelResponse(parts=[TextPart("Sorry to hear that.")]),
    ]
    await recorded(store, make_agent(), "Where is it?", message_history=history)
    edited = [*history[:2], ModelRequest(parts=[UserPromptPart("My order is broken")]), history[3]]
    explanation = await explain(make_agent(), "Where is it?", "support", store=store, message_history=edited)
    assert explanation.differences == ("message 3 (user prompt) differs",)
    shorter = await explain(make_agent(), "Where is it now?", "support", store=store, message_history=history[:2])
    assert shorter.differences == ("prompt changed", "message history: 4 message(s) recorded, 2 now")


async def test_the_nearest_recording_is_the_one_differing_least() -> None:
    store = MemoryStore()
    await recorded(store, make_agent(instructions="Other."), "other prompt", model_settings={"temperature": 1.0})
    near = await recorded(store, make_agent(), "q", model_settings={"temperature": 0.0})
    explanation = await explain(make_agent(), "q", "support", store=store, model_settings={"temperature": 0.2})
    assert explanation.nearest == near and explanation.compared == 2
    assert explanation.differences == ("model_settings.temperature 0.0 -> 0.2",)


async def test_a_replay_miss_carries_its_explanation() -> None:
    store = MemoryStore()
    await recorded(store, make_agent(), model_settings={"temperature": 0.0})
    with pytest.raises(CacheMissError) as missed:
        await cached_agent_run(make_agent(), "q", "support", store=store, mode="replay", model_settings={"temperature": 0.7})
    assert isinstance(missed.value.explanation, Explanation)
    assert "model_settings.temperature 0.0 -> 0.7" in str(missed.value)
    assert missed.value.explanation.nearest is not None


def test_explain_sync_and_arguments_that_do_not_change_the_key() -> None:
    store = MemoryStore()
    from pyai_caching import cached_agent_run_sync

    cached_agent_run_sync(make_agent(), "q", "support", store=store)
    explanation = explain_sync(make_agent(), "q", "support", store=store, ttl=5, max_wait=1, mode="replay")
    assert explanation.recorded
    with pytest.raises(ValueError, match="task_name"):
        explain_sync(make_agent(), "q", "bad task", store=store)


async def test_a_call_that_cannot_be_keyed_is_explained_not_raised() -> None:
    explanation = await explain(make_agent(), "q", "support", store=MemoryStore(), key_extra=object())
    assert not explanation.recorded and "cannot be cached" in str(explanation)


async def test_the_manifest_holds_no_secret_header_and_names_no_api_key() -> None:
    store = MemoryStore()
    headers = {"Authorization": "Bearer sk-live-123", "X-Api-Key": "sk-live-456", "anthropic-beta": "tools-2024"}
    key = await recorded(store, make_agent(), model_settings={"extra_headers": headers, "temperature": 0.5})
    data = await store.get(key)
    assert data is not None and b"sk-live" not in data
    manifest = read_manifest(data)
    assert manifest["items"]["model_settings.temperature"] == "0.5"
    assert manifest["items"]["model_settings.extra_headers"].startswith("#")  # a digest, not the headers


async def test_the_manifest_of_an_agent_changed_in_place_is_its_new_configuration() -> None:
    """The agent's part of a manifest is worked out once per configuration: a changed agent gets its own."""
    store, agent = MemoryStore(), make_agent(model_settings={"temperature": 0.1})
    manifests = []
    for temperature, prompt in ((0.1, "a"), (0.1, "b"), (0.7, "c"), (0.1, "d")):
        agent.model_settings = {"temperature": temperature}
        data = await store.get(await recorded(store, agent, prompt))
        assert data is not None
        manifests.append(read_manifest(data)["items"])
    assert [m["model_settings.temperature"] for m in manifests] == ["0.1", "0.1", "0.7", "0.1"]
    assert len({m["prompt"] for m in manifests}) == 4  # the rest is each call's own
    assert {k: v for k, v in manifests[0].items() if k != "prompt"} == {
        k: v for k, v in manifests[3].items() if k != "prompt"
    }


@pytest.mark.redis_server
async def test_explanations_work_on_redis(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    try:
        await recorded(store, make_agent(), model_settings={"temperature": 0.0})  # type: ignore[arg-type]
        explanation = await explain(make_agent(), "q", "support", store=store, model_settings={"temperature": 0.9})
        assert explanation.differences == ("model_settings.temperature 0.0 -> 0.9",)
    finally:
        await store.aclose()



async def test_an_expired_or_drifted_recording_is_not_said_to_answer(tmp_path: Any) -> None:
    from pydantic import BaseModel, field_validator
    from pydantic_ai.messages import ToolCallPart

    from pyai_caching import LocalStore

    local = LocalStore(tmp_path / "cache")
    await recorded(local, make_agent(), ttl=0.05)  # type: ignore[arg-type]
    import asyncio

    await asyncio.sleep(0.1)
    expired = await explain(make_agent(), "q", "support", store=local)
    assert expired.recorded and "past its TTL" in str(expired)
    assert len(await local.keys("")) == 1  # explaining removed nothing
    assert (await explain(make_agent(), "q", "support", store=local, mode="replay")).problem is None

    class Price(BaseModel):
        cents: int

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"cents": 250})])

    store = MemoryStore()
    await cached_agent_run(Agent(FunctionModel(respond, model_name="m"), output_type=Price), "p", "support", store=store)

    class Price(BaseModel):  # type: ignore[no-redef] - same schema, a stricter validator since
        cents: int

        @field_validator("cents")
        @classmethod
        def big(cls, value: int) -> int:
            if value < 500:
                raise ValueError("too cheap")
            return value

    drifted = await explain(Agent(FunctionModel(respond, model_name="m"), output_type=Price), "p", "support", store=store)
    assert drifted.recorded and "cannot be used: the output does not validate: output.cents: Value error, too cheap" in str(drifted)
