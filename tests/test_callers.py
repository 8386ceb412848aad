"""Nothing is shared between callers: every result is the caller's own objects and run identity, and a hit's
output is what the agent produced, once."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationInfo, field_validator
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart, UserPromptPart
from pydantic_ai.usage import RequestUsage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import MemoryStore, cached_agent_run
from pyai_caching._identity import _uuid7
from pyai_caching._keys import format_key, request_digest


class Profile(BaseModel):
    name: str
    interests: list[str]


def profile_model(calls: list[int], delay: float = 0.0) -> FunctionModel:
    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append(1)
        await asyncio.sleep(delay)
        args = {"name": "Alex", "interests": ["hiking"]}
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, args)])

    return FunctionModel(respond, model_name="gpt-4o-mini")


def poison(result: Any) -> None:
    """What a caller may do with its result right after the await."""
    result.output.name = "Mallory"
    result.output.interests.append("poison")
    result.all_messages().append(ModelRequest(parts=[UserPromptPart("injected")]))
    result.new_messages()[1].parts[0].args = {"name": "Mallory"}


CLEAN = Profile(name="Alex", interests=["hiking"])


def content(result: Any) -> Any:
    """The messages' content, without what identifies the run."""
    return [[(type(p).__name__, getattr(p, "content", None), getattr(p, "args", None)) for p in m.parts] for m in result.all_messages()]


# ----------------------------------------------------------------- no cache poisoning


async def test_what_the_leader_does_to_its_result_no_later_caller_sees() -> None:
    store, calls = MemoryStore(), []
    agent = Agent(profile_model(calls), output_type=Profile)
    first = await cached_agent_run(agent, "q", "profile", store=store)
    clean = content(first)
    poison(first)
    again = await cached_agent_run(agent, "q", "profile", store=store)
    assert again.cached and calls == [1]
    assert again.output == CLEAN
    assert content(again) == clean


async def test_concurrent_callers_share_no_object() -> None:
    store, calls = MemoryStore(), []
    agent = Agent(profile_model(calls, delay=0.05), output_type=Profile)
    leader = asyncio.create_task(cached_agent_run(agent, "q", "profile", store=store))
    await asyncio.sleep(0.01)  # the others find it in flight
    followers = [asyncio.create_task(cached_agent_run(agent, "q", "profile", store=store)) for _ in range(2)]
    first = await leader
    clean = content(first)
    poison(first)  # right after the await, before the followers resume
    results = [first, *[await f for f in followers]]
    assert calls == [1] and [r.cached for r in results] == [False, True, True]
    assert results[1].output == CLEAN and content(results[1]) == clean
    outputs = [id(r.output) for r in results]
    messages = [id(m) for r in results for m in r.all_messages()]
    assert len(set(outputs)) == 3 and len(set(messages)) == len(messages)
    poison(results[1])
    assert results[2].output == CLEAN and content(results[2]) == clean


async def test_a_follower_gets_its_own_copy_even_when_the_output_is_not_stored() -> None:
    store, calls = MemoryStore(), []
    agent = Agent(profile_model(calls, delay=0.05), output_type=Doubled)
    leader = asyncio.create_task(cached_agent_run(agent, "q", "profile", store=store))
    await asyncio.sleep(0.01)
    follower = await cached_agent_run(agent, "q", "profile", store=store)
    first = await leader
    assert calls == [1] and follower.cached
    assert follower.output is not first.output and follower.output == first.output


# ----------------------------------------------------------------- the caller's own run identity


async def test_a_hit_carries_the_callers_run_conversation_and_metadata() -> None:
    store, calls = MemoryStore(), []
    agent = Agent(profile_model(calls), output_type=Profile)
    alice = await cached_agent_run(
        agent, "q", "profile", store=store, conversation_id="conv-alice", metadata={"tenant": "alice"}
    )
    before = datetime.now(tz=timezone.utc)
    bob = await cached_agent_run(
        agent, "q", "profile", store=store, conversation_id="conv-bob", metadata={"tenant": "bob"}, run_id="run-bob"
    )
    assert bob.cached and calls == [1]
    assert (bob.run_id, bob.conversation_id, bob.metadata) == ("run-bob", "conv-bob", {"tenant": "bob"})
    assert alice.conversation_id == "conv-alice" and alice.metadata == {"tenant": "alice"}
    for message in bob.all_messages():
        assert (message.run_id, message.conversation_id) == ("run-bob", "conv-bob")
    request = bob.all_messages()[0]
    assert isinstance(request, ModelRequest) and request.timestamp is not None and request.timestamp >= before
    assert all(part.timestamp >= before for part in request.parts)
    dumped = bob.all_messages_json()
    assert b"alice" not in dumped and alice.run_id.encode() not in dumped


async def test_a_hit_without_ids_gets_new_ones_and_continues_its_own_history() -> None:
    store, calls = MemoryStore(), []
    agent = Agent(profile_model(calls), output_type=Profile)
    history = [
        ModelRequest(parts=[UserPromptPart("earlier")], conversation_id="conv-1"),
        ModelResponse(parts=[TextPart("ok")], conversation_id="conv-1"),
    ]
    first = await cached_agent_run(agent, "q", "profile", store=store)
    second = await cached_agent_run(agent, "q", "profile", store=store)
    assert second.cached and second.run_id != first.run_id and second.conversation_id != first.conversation_id

    await cached_agent_run(agent, "next", "profile", store=store, message_history=history)
    mine = [
        ModelRequest(parts=[UserPromptPart("earlier")], conversation_id="conv-2"),
        ModelResponse(parts=[TextPart("ok")], conversation_id="conv-2"),
    ]
    hit = await cached_agent_run(agent, "next", "profile", store=store, message_history=mine)
    assert hit.cached and hit.conversation_id == "conv-2"
    assert hit.all_messages()[:2] == mine  # the caller's own history, not the first caller's


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_run_ids_made_in_a_forked_worker_are_not_its_parents() -> None:
    """Hits draw their ids from a pool of random bytes: a worker forked from a process that used it (gunicorn,
    Celery prefork) must not hand out the same run and conversation ids as its parent."""
    _uuid7()  # the pool now holds bytes the child would inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, ",".join(_uuid7() for _ in range(4)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = {i.split("-", 3)[3] for i in os.read(read, 4096).decode().split(",")}  # the random parts
    parent = {_uuid7().split("-", 3)[3] for _ in range(4)}
    assert len(child) == 4 and not child & parent


# ----------------------------------------------------------------- the output, once


class Doubled(BaseModel):
    """A validator that changes the value on every pass (it would be applied again on a re-validation)."""

    name: str
    interests: list[str]

    @field_validator("name")
    @classmethod
    def tag(cls, value: str) -> str:
        return value + "!"


async def test_an_output_that_does_not_read_back_is_answered_not_cached(caplog: pytest.LogCaptureFixture) -> None:
    store, calls = MemoryStore(), []
    agent = Agent(profile_model(calls), output_type=Doubled)
    first = await cached_agent_run(agent, "q", "doubled", store=store)
    second = await cached_agent_run(agent, "q", "doubled", store=store)
    assert first.output.name == second.output.name == "Alex!"  # never "Alex!!"
    assert calls == [1, 1] and not second.cached
    assert "does not read back" in caplog.text


async def test_a_str_output_turned_into_something_else_by_a_validator_is_answered_not_cached() -> None:
    """`output_type=str` with an output validator returning a dict (PydanticAI hands its value on): the entry
    would never read back as a `str`, so it is not stored; concurrent callers still share the one answer."""
    calls: list[int] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append(1)
        return ModelResponse(parts=[TextPart('{"score": 7}')])

    agent = Agent(FunctionModel(respond, model_name="m"))

    @agent.output_validator
    def parse(text: str) -> Any:
        return json.loads(text)

    store = MemoryStore()
    first = await cached_agent_run(agent, "q", "t", store=store)
    second = await cached_agent_run(agent, "q", "t", store=store)
    assert first.output == second.output == {"score": 7} and not second.cached and len(calls) == 2
    assert await store.keys("") == []
    together = await asyncio.gather(*(cached_agent_run(agent, "q2", "t", store=store) for _ in range(3)))
    assert [r.output for r in together] == [{"score": 7}] * 3 and len(calls) == 3


class Money(BaseModel):
    amount: int

    @field_validator("amount")
    @classmethod
    def in_currency(cls, value: int, info: ValidationInfo) -> int:
        return value * info.context["rate"]  # raises TypeError without a context


def money_model(calls: list[int]) -> FunctionModel:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append(1)
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"amount": 3})])

    return FunctionModel(respond)


async def test_a_validator_reading_the_validation_context_gets_it_on_a_hit() -> None:
    store, calls = MemoryStore(), []
    agent = Agent(money_model(calls), output_type=Money, validation_context={"rate": 1})
    first = await cached_agent_run(agent, "q", "money", store=store)
    second = await cached_agent_run(agent, "q", "money", store=store)
    assert calls == [1] and second.cached and second.output == first.output == Money.model_construct(amount=3)


async def test_a_validator_raising_on_a_hit_is_a_miss_not_an_error() -> None:
    calls: list[int] = []
    plain = Agent(money_model(calls), output_type=Money, validation_context={"rate": 1})
    # a context computed from the run: a hit has no run to compute it from, so the validator raises TypeError there
    computed = Agent(money_model(calls), output_type=Money, validation_context=lambda ctx: {"rate": 1})
    source = MemoryStore()
    await cached_agent_run(plain, "q", "money", store=source)
    (entry,) = [value for value, _ in source._entries.values()]
    store = MemoryStore()
    await store.set(format_key("pyai_caching", "money", request_digest(computed, "q", [], {})), entry, None)

    result = await cached_agent_run(computed, "q", "money", store=store)  # would raise TypeError if served
    assert not result.cached and calls == [1, 1] and result.output == Money.model_construct(amount=3)


# ----------------------------------------------------------------- usage= and conversation= as agent.run treats them


async def test_a_hit_adds_its_usage_to_the_callers_usage_object_and_records_its_own() -> None:
    from pydantic_ai.usage import RunUsage

    store, calls = MemoryStore(), []
    agent = Agent(money_model(calls), output_type=Money, validation_context={"rate": 1})
    alice = RunUsage(requests=7, input_tokens=5000)
    first = await cached_agent_run(agent, "q", "usage", store=store, usage=alice)
    own_requests = first.usage.requests - 7
    bob = RunUsage(requests=1, input_tokens=3)
    second = await cached_agent_run(agent, "q", "usage", store=store, usage=bob)
    assert second.cached and calls == [1]
    assert second.usage is bob and bob.requests == 1 + own_requests  # Alice's 7 are not Bob's
    assert bob.input_tokens == 3 + (first.usage.input_tokens - 5000)


async def test_a_hit_takes_the_conversation_id_of_its_conversation() -> None:
    from pydantic_ai.conversation import Conversation

    store, calls = MemoryStore(), []
    agent = Agent(profile_model(calls), output_type=Profile)
    await cached_agent_run(agent, "q", "conv", store=store, conversation=Conversation(conversation_id="conv-A"))
    hit = await cached_agent_run(agent, "q", "conv", store=store, conversation=Conversation(conversation_id="conv-B"))
    assert hit.cached and hit.conversation_id == "conv-B"


async def test_a_hit_from_a_conversation_adds_its_usage_to_that_conversations_not_the_first_callers() -> None:
    from pydantic_ai.conversation import Conversation
    from pydantic_ai.usage import RunUsage

    store, calls = MemoryStore(), []
    agent = Agent(profile_model(calls), output_type=Profile)
    alice = Conversation(conversation_id="conv-A", usage=RunUsage(requests=40, input_tokens=90_000))
    first = await cached_agent_run(agent, "q", "conv", store=store, conversation=alice)
    own = first.usage.requests - 40
    assert own >= 1 and alice.usage.requests == 40  # as agent.run: the conversation object is not changed
    bob = Conversation(conversation_id="conv-B", usage=RunUsage(requests=2, input_tokens=10))
    hit = await cached_agent_run(agent, "q", "conv", store=store, conversation=bob)
    assert hit.cached and calls == [1]
    assert hit.usage.requests == 2 + own  # Alice's 40 earlier requests are not Bob's
    assert hit.usage.input_tokens == 10 + (first.usage.input_tokens - 90_000)
    assert bob.usage.requests == 2
    fresh = await cached_agent_run(agent, "q", "conv", store=store)  # and the entry records the run's own usage
    assert fresh.cached and fresh.usage.requests == own


async def test_a_cancelled_run_still_counts_what_it_paid_for() -> None:
    from pyai_caching import get_stats

    store = MemoryStore()
    started = asyncio.Event()

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if any(isinstance(p, ToolReturnPart) for m in messages for p in m.parts):
            started.set()
            await asyncio.sleep(10)  # cancelled here, after one paid response
        return ModelResponse(parts=[ToolCallPart("lookup", {})], usage=RequestUsage(input_tokens=1_000_000, output_tokens=0))

    agent = Agent(FunctionModel(respond, model_name="gpt-4o-mini"))

    @agent.tool_plain
    def lookup() -> str:
        return "found"

    from pyai_caching._registry import loop_state

    task = asyncio.create_task(cached_agent_run(agent, "q", "cancelled", store=store))
    await started.wait()
    for flight in list((await loop_state()).flights.values()):  # as a loop shutting down cancels every task
        flight.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = (await get_stats("cancelled", store=store)).total
    assert stats.failed == 1 and stats.cost_spent == pytest.approx(0.15)  # 1M input tokens of gpt-4o-mini


async def test_run_metadata_is_never_stored_and_a_hit_merges_its_own_as_agent_run_does() -> None:
    store, calls = MemoryStore(), []
    agent = Agent(profile_model(calls), output_type=Profile, metadata={"app": "crm", "tier": "free"})
    alice = await cached_agent_run(agent, "q", "meta", store=store, metadata={"user": "alice@example.com", "tier": "pro"})
    assert alice.metadata == {"app": "crm", "tier": "pro", "user": "alice@example.com"}  # PydanticAI's own merge
    [(data, _)] = store._entries.values()
    assert b"alice@example.com" not in data and b"crm" not in data
    bob = await cached_agent_run(agent, "q", "meta", store=store, metadata={"user": "bob@example.com"})
    assert bob.cached and bob.metadata == {"app": "crm", "tier": "free", "user": "bob@example.com"}
    plain = await cached_agent_run(agent, "q", "meta", store=store)
    assert plain.cached and plain.metadata == {"app": "crm", "tier": "free"}
    with agent.override(metadata={"only": "override"}):
        overridden = await cached_agent_run(agent, "q", "meta", store=store, metadata={"user": "carol"})
    assert overridden.cached and overridden.metadata == {"only": "override"}
