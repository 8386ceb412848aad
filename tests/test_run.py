"""The front door: hits are faithful, misses are stored, bad input fails early, the cache fails open."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, field_validator
from pydantic_ai import Agent, AgentRunResult
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter, ModelRequest, ModelResponse, TextPart, ToolCallPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage


from pyai_caching import (
    CacheError,
    CachedAgentRunResult,
    ConfigurationError,
    LocalStore,
    MemoryStore,
    Store,
    cached_agent_run,
    cached_agent_run_sync,
)


class Profile(BaseModel):
    name: str
    age: int
    interests: list[str]


class CountingModel:
    """A FunctionModel answering with a Profile tool call, counting calls."""

    def __init__(self, *, delay: float = 0.0, name: str = "gpt-4o-mini", usage: RequestUsage | None = None) -> None:
        self.calls = 0
        self.delay = delay
        self.usage = usage or RequestUsage(input_tokens=1000, output_tokens=100)
        self.model = FunctionModel(self._respond, model_name=name)

    async def _respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if info.output_tools:
            part: Any = ToolCallPart(
                info.output_tools[0].name, {"name": "Alex", "age": 30, "interests": ["hiking", f"call {self.calls}"]}
            )
        else:
            part = TextPart(f"answer {self.calls}")
        return ModelResponse(parts=[part], usage=self.usage)


@pytest.fixture
def model() -> CountingModel:
    return CountingModel()


@pytest.fixture
def agent(model: CountingModel) -> Agent[None, Profile]:
    return Agent(model.model, output_type=Profile, system_prompt="Extract a profile.")


@pytest.fixture
def memory() -> MemoryStore:
    return MemoryStore()


async def test_miss_then_hit_returns_the_stored_run(agent: Agent[None, Profile], model: CountingModel, memory: MemoryStore) -> None:
    first = await cached_agent_run(agent, "Hi, I'm Alex", "profile", store=memory)
    second = await cached_agent_run(agent, "Hi, I'm Alex", "profile", store=memory)

    assert model.calls == 1
    assert (first.cached, second.cached) == (False, True)
    assert isinstance(second, AgentRunResult) and isinstance(second, CachedAgentRunResult)
    assert isinstance(second.output, Profile)
    assert second.output == first.output
    assert second.usage == first.usage
    assert content(second.all_messages()) == content(first.all_messages())
    assert content(second.new_messages()) == content(first.new_messages())
    assert second.new_messages() != first.new_messages()  # the same content, this call's own run identity
    assert second.run_id != first.run_id
    assert second.model == first.model == "gpt-4o-mini"


IDENTITY = {"timestamp", "run_id", "conversation_id"}


def content(messages: list[ModelMessage]) -> Any:
    """Messages as JSON without what identifies one run (ids, times of requests)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in IDENTITY}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(ModelMessagesTypeAdapter.dump_json(messages)))


async def test_cost_on_miss_zero_on_hit_and_saved_cost_kept(agent: Agent[None, Profile], memory: MemoryStore) -> None:
    miss = await cached_agent_run(agent, "q", "profile", store=memory)
    hit = await cached_agent_run(agent, "q", "profile", store=memory)

    # gpt-4o-mini list price: $0.15 / M input, $0.60 / M output
    assert miss.cost == pytest.approx(1000 * 0.15 / 1e6 + 100 * 0.60 / 1e6)
    assert miss.saved_cost is None
    assert hit.cost == 0.0
    assert hit.saved_cost == pytest.approx(miss.cost)


async def test_conversation_continues_from_a_cached_answer(agent: Agent[None, Profile], model: CountingModel, memory: MemoryStore) -> None:
    await cached_agent_run(agent, "first", "profile", store=memory)
    cached = await cached_agent_run(agent, "first", "profile", store=memory)
    assert cached.cached

    follow_up = await agent.run("second", message_history=cached.all_messages())
    assert model.calls == 2
    history = cached.all_messages()
    assert follow_up.all_messages()[: len(history)] == history
    assert follow_up.new_messages()[0].parts[0].content == "second"  # type: ignore[union-attr]


async def test_history_rebuilt_from_scratch_hits(model: CountingModel, memory: MemoryStore) -> None:
    agent = Agent(model.model)
    built = [ModelRequest(parts=[UserPromptPart("Hi")]), ModelResponse(parts=[TextPart("Hello!")])]
    rebuilt = [ModelRequest(parts=[UserPromptPart("Hi")]), ModelResponse(parts=[TextPart("Hello!")])]
    assert built[0].parts[0].timestamp != rebuilt[0].parts[0].timestamp or built[0] is not rebuilt[0]

    first = await cached_agent_run(agent, "How are you?", "chat", message_history=built, store=memory)
    second = await cached_agent_run(agent, "How are you?", "chat", message_history=rebuilt, store=memory)
    chat = await cached_agent_run(
        agent,
        "How are you?",
        "chat",
        message_history=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        store=memory,
    )
    assert (first.cached, second.cached, chat.cached) == (False, True, True)
    assert model.calls == 1


async def test_different_history_content_misses(model: CountingModel, memory: MemoryStore) -> None:
    agent = Agent(model.model)
    await cached_agent_run(agent, "q", "chat", message_history=[{"role": "user", "content": "Hi"}], store=memory)
    other = await cached_agent_run(agent, "q", "chat", message_history=[{"role": "user", "content": "Yo"}], store=memory)
    assert not other.cached
    assert model.calls == 2


async def test_prompt_may_be_empty_when_history_is_given(model: CountingModel, memory: MemoryStore) -> None:
    agent = Agent(model.model)
    result = await cached_agent_run(agent, None, "chat", message_history=[{"role": "user", "content": "Hi"}], store=memory)
    assert result.output == "answer 1"


async def test_run_kwargs_reach_agent_run(model: CountingModel, memory: MemoryStore) -> None:
    agent = Agent(model.model, deps_type=str)
    seen: list[str] = []

    @agent.system_prompt
    def with_deps(ctx: Any) -> str:
        seen.append(ctx.deps)
        return f"user is {ctx.deps}"

    await cached_agent_run(agent, "q", "deps", deps="alice", store=memory)
    assert seen == ["alice"]


async def test_key_extra_separates_entries(model: CountingModel, memory: MemoryStore) -> None:
    agent = Agent(model.model, deps_type=str)
    a = await cached_agent_run(agent, "q", "deps", deps="alice", key_extra={"user": "alice"}, store=memory)
    b = await cached_agent_run(agent, "q", "deps", deps="bob", key_extra={"user": "bob"}, store=memory)
    a2 = await cached_agent_run(agent, "q", "deps", deps="alice", key_extra={"user": "alice"}, store=memory)
    assert (a.cached, b.cached, a2.cached) == (False, False, True)
    assert a.cache_key != b.cache_key


# --- invalid input: rejected before any model call -------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prompt": "", "task_name": "t"}, ValueError, "prompt is empty"),
        ({"prompt": None, "task_name": "t"}, ValueError, "prompt is empty"),
        ({"prompt": "q", "task_name": ""}, ValueError, "task_name"),
        ({"prompt": "q", "task_name": "a:b"}, ValueError, "task_name"),
        ({"prompt": "q", "task_name": "t", "ttl": -1}, ValueError, "ttl"),
        ({"prompt": "q", "task_name": "t", "ttl": 0}, ValueError, "ttl"),
        ({"prompt": "q", "task_name": "t", "ttl": "1d"}, TypeError, "ttl"),
        ({"prompt": "q", "task_name": "t", "max_wait": -1}, ValueError, "max_wait"),
        ({"prompt": 42, "task_name": "t"}, TypeError, "prompt"),
        ({"prompt": "q", "task_name": "t", "message_history": "not a list"}, TypeError, "message_history"),
        ({"prompt": "q", "task_name": "t", "message_history": [{"role": "robot", "content": "x"}]}, ValueError, "role"),
        ({"prompt": "q", "task_name": "t", "not_a_run_kwarg": 1}, TypeError, "not_a_run_kwarg"),
        ({"prompt": "q", "task_name": "t", "user_prompt": "x"}, TypeError, "prompt="),
        ({"prompt": "q", "task_name": "t", "namespace": "a:b"}, ValueError, "namespace"),
        ({"prompt": "q", "task_name": "t", "custom_costs": {"m": {"input": 1}}}, TypeError, "ModelCosts"),
        ({"prompt": "q", "task_name": "t", "expense_recorder": "ledger"}, TypeError, "expense_recorder"),
    ],
)
async def test_invalid_input_is_rejected_before_any_model_call(
    agent: Agent[None, Profile], model: CountingModel, memory: MemoryStore, kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        await cached_agent_run(agent, store=memory, **kwargs)
    assert model.calls == 0


async def test_a_non_agent_is_rejected(memory: MemoryStore) -> None:
    with pytest.raises(TypeError, match="agent"):
        await cached_agent_run(object(), "q", "t", store=memory)  # type: ignore[arg-type]


async def test_missing_configuration_names_the_env_var(agent: Agent[None, Profile], model: CountingModel) -> None:
    with pytest.raises(ConfigurationError, match="LLM_CACHE_REDIS_URL") as info:
        await cached_agent_run(agent, "q", "t")
    assert "redis://" in str(info.value)
    assert model.calls == 0


@pytest.mark.parametrize("url", ["http://localhost:6379", "localhost:6379", "redis+replica://h:26379/m"])
async def test_non_redis_url_is_a_configuration_error(agent: Agent[None, Profile], model: CountingModel, url: str) -> None:
    with pytest.raises(ConfigurationError, match="redis://"):
        await cached_agent_run(agent, "q", "t", redis_url=url)
    assert model.calls == 0


async def test_malformed_env_url_and_ttl_are_configuration_errors(
    agent: Agent[None, Profile], model: CountingModel, memory: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_CACHE_REDIS_URL", "memcached://x")
    with pytest.raises(ConfigurationError, match="LLM_CACHE_REDIS_URL"):
        await cached_agent_run(agent, "q", "t")
    monkeypatch.setenv("LLM_CACHE_TTL", "two weeks")
    with pytest.raises(ConfigurationError, match="LLM_CACHE_TTL"):
        await cached_agent_run(agent, "q", "t", store=memory)
    assert model.calls == 0


async def test_env_dir_selects_the_embedded_store(
    agent: Agent[None, Profile], model: CountingModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "cache"))
    await cached_agent_run(agent, "q", "profile")
    hit = await cached_agent_run(agent, "q", "profile")
    assert hit.cached and model.calls == 1
    assert list((tmp_path / "cache" / "pyai_caching" / "v2" / "profile").glob("*.json"))


# --- corrupt entries, schema changes, TTL -----------------------------------------------------


async def test_corrupt_entry_is_a_miss_and_is_overwritten(
    agent: Agent[None, Profile], model: CountingModel, memory: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    first = await cached_agent_run(agent, "q", "profile", store=memory)
    assert first.cache_key is not None
    await memory.set(first.cache_key, b"\x00not json", None)

    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        again = await cached_agent_run(agent, "q", "profile", store=memory)
    assert not again.cached and model.calls == 2
    assert "unreadable cache entry" in caplog.text
    third = await cached_agent_run(agent, "q", "profile", store=memory)
    assert third.cached and model.calls == 2


async def test_entry_that_no_longer_validates_is_a_miss_and_is_overwritten(model: CountingModel, memory: MemoryStore) -> None:
    first = await cached_agent_run(Agent(model.model, output_type=Profile), "q", "profile", store=memory)

    class Profile2(BaseModel):  # same JSON schema (so the same key), stricter validation
        model_config = {"title": "Profile"}
        name: str
        age: int
        interests: list[str]

        @field_validator("interests")
        @classmethod
        def not_the_first_call(cls, value: list[str]) -> list[str]:
            if "call 1" in value:
                raise ValueError("stale")
            return value

    stricter = Agent(model.model, output_type=Profile2)
    result = await cached_agent_run(stricter, "q", "profile", store=memory)
    assert result.cache_key == first.cache_key
    assert not result.cached and model.calls == 2
    assert isinstance(result.output, Profile2)
    again = await cached_agent_run(stricter, "q", "profile", store=memory)
    assert again.cached and model.calls == 2


async def test_expired_entry_is_a_miss(agent: Agent[None, Profile], model: CountingModel) -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    await cached_agent_run(agent, "q", "profile", store=store, ttl=60)
    now[0] += 59
    assert (await cached_agent_run(agent, "q", "profile", store=store)).cached
    now[0] += 2
    assert not (await cached_agent_run(agent, "q", "profile", store=store)).cached
    assert model.calls == 2


# --- fail open --------------------------------------------------------------------------------


class BrokenStore(Store):
    def __init__(self) -> None:
        self.calls = 0

    async def _fail(self, *args: Any) -> Any:
        self.calls += 1
        raise CacheError("connection refused")

    get = set = delete = add_counters = get_counters = _fail  # type: ignore[assignment]


async def test_a_broken_store_never_fails_the_run_and_warns_once(
    agent: Agent[None, Profile], model: CountingModel, caplog: pytest.LogCaptureFixture
) -> None:
    broken = BrokenStore()
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        results = [await cached_agent_run(agent, "q", "profile", store=broken) for _ in range(5)]
    assert all(isinstance(r.output, Profile) and not r.cached for r in results)
    assert model.calls == 5
    assert caplog.text.count("running without the cache") == 1
    assert broken.calls == 1  # the breaker skips the store after the first failure


async def test_a_store_raising_anything_fails_open(agent: Agent[None, Profile], model: CountingModel) -> None:
    class Buggy(MemoryStore):
        async def get(self, key: str) -> bytes | None:
            raise RuntimeError("bug in a custom store")

    result = await cached_agent_run(agent, "q", "profile", store=Buggy())
    assert isinstance(result.output, Profile)


# --- stampede ---------------------------------------------------------------------------------


async def test_twenty_concurrent_identical_calls_make_one_model_call(memory: MemoryStore) -> None:
    slow = CountingModel(delay=0.2)
    agent = Agent(slow.model, output_type=Profile)
    results = await asyncio.gather(*(cached_agent_run(agent, "q", "profile", store=memory) for _ in range(20)))
    assert slow.calls == 1
    assert sum(not r.cached for r in results) == 1
    assert len({r.output.model_dump_json() for r in results}) == 1
    # followers get their own copies, not one shared object
    assert len({id(r.output) for r in results}) == 20


async def test_a_cancelled_caller_still_gets_the_paid_answer_stored(memory: MemoryStore) -> None:
    slow = CountingModel(delay=0.2)
    agent = Agent(slow.model, output_type=Profile)
    task = asyncio.create_task(cached_agent_run(agent, "q", "profile", store=memory))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)
    hit = await cached_agent_run(agent, "q", "profile", store=memory)
    assert hit.cached and slow.calls == 1


async def test_model_errors_reach_every_waiting_caller(memory: MemoryStore) -> None:
    calls = 0

    async def fail(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        raise ValueError("model exploded")

    agent = Agent(FunctionModel(fail))
    results = await asyncio.gather(*(cached_agent_run(agent, "q", "t", store=memory) for _ in range(3)), return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, ValueError) for r in results)
    assert memory._entries == {}


# --- sync -------------------------------------------------------------------------------------


def test_sync_in_a_plain_script_many_times(agent: Agent[None, Profile], model: CountingModel, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    results = [cached_agent_run_sync(agent, "q", "profile", store=store) for _ in range(10)]
    assert [r.cached for r in results] == [False] + [True] * 9
    assert model.calls == 1


async def test_sync_inside_a_running_event_loop(agent: Agent[None, Profile], model: CountingModel, memory: MemoryStore) -> None:
    first = cached_agent_run_sync(agent, "q", "profile", store=memory)
    second = cached_agent_run_sync(agent, "q", "profile", store=memory)
    assert (first.cached, second.cached) == (False, True)
    assert isinstance(second.output, Profile)


def test_sync_raises_the_same_errors(agent: Agent[None, Profile], model: CountingModel) -> None:
    with pytest.raises(ConfigurationError):
        cached_agent_run_sync(agent, "q", "profile")
    assert model.calls == 0


# --- unkeyable runs ---------------------------------------------------------------------------


async def test_an_unkeyable_run_goes_uncached_but_returns(
    agent: Agent[None, Profile], model: CountingModel, memory: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        first = await cached_agent_run(agent, "q", "profile", store=memory, key_extra=object())
        second = await cached_agent_run(agent, "q", "profile", store=memory, key_extra=object())
    assert (first.cached, second.cached) == (False, False)
    assert first.cache_key is None
    assert model.calls == 2
    assert "cannot be cached" in caplog.text


async def test_settings_are_part_of_the_key(agent: Agent[None, Profile], model: CountingModel, memory: MemoryStore) -> None:
    await cached_agent_run(agent, "q", "profile", store=memory, model_settings={"temperature": 0.0})
    other = await cached_agent_run(agent, "q", "profile", store=memory, model_settings={"temperature": 1.0})
    same = await cached_agent_run(agent, "q", "profile", store=memory, model_settings={"temperature": 0.0})
    assert (other.cached, same.cached) == (False, True)




# --- the write after a miss -------------------------------------------------------------------


class GatedStore(MemoryStore):
    """A store whose writes wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await self.gate.wait()
        await super().set(key, value, ttl)


class SlowWriteStore(MemoryStore):
    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await asyncio.sleep(0.05)
        await super().set(key, value, ttl)


async def test_a_miss_returns_with_its_entry_written_and_followers_wait_for_it(
    agent: Agent[None, Profile], model: CountingModel
) -> None:
    store = GatedStore()
    leader = asyncio.create_task(cached_agent_run(agent, "q", "profile", store=store))
    await asyncio.sleep(0.05)
    follower = asyncio.create_task(cached_agent_run(agent, "q", "profile", store=store))
    await asyncio.sleep(0.05)
    assert not leader.done() and not follower.done()  # the write is not done: nobody has the answer yet
    store.gate.set()
    result, meanwhile = await leader, await follower
    assert not result.cached and meanwhile.cached and model.calls == 1
    assert result.cache_key in store._entries


def test_the_end_of_asyncio_run_does_not_lose_a_pending_write(agent: Agent[None, Profile]) -> None:
    store = SlowWriteStore()
    result = asyncio.run(cached_agent_run(agent, "q", "profile", store=store))
    assert result.cache_key in store._entries


def test_sync_returns_with_its_entry_written(agent: Agent[None, Profile]) -> None:
    store = SlowWriteStore()
    result = cached_agent_run_sync(agent, "q", "profile", store=store)
    assert result.cache_key in store._entries


async def test_user_content_prompts_are_cached_by_content(model: CountingModel, memory: MemoryStore) -> None:
    from pydantic_ai.messages import BinaryContent

    agent = Agent(model.model)
    image = BinaryContent(data=b"\x89PNG fake image bytes", media_type="image/png")
    first = await cached_agent_run(agent, ["What is in this image?", image], "vision", store=memory)
    again = await cached_agent_run(
        agent, ["What is in this image?", BinaryContent(data=b"\x89PNG fake image bytes", media_type="image/png")], "vision", store=memory
    )
    other = await cached_agent_run(
        agent, ["What is in this image?", BinaryContent(data=b"\x89PNG other bytes", media_type="image/png")], "vision", store=memory
    )
    assert (first.cached, again.cached, other.cached) == (False, True, False)
    assert model.calls == 2


def test_sync_calls_from_many_threads_share_one_model_call(memory: MemoryStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    slow = CountingModel(delay=0.2)
    agent = Agent(slow.model, output_type=Profile)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: cached_agent_run_sync(agent, "q", "profile", store=memory), range(8)))
    assert slow.calls == 1
    assert sum(not r.cached for r in results) == 1


# --- flights: failures, cancellation, recording -----------------------------------------------


async def test_a_retry_right_after_a_failed_call_calls_the_model_again(memory: MemoryStore) -> None:
    calls = 0

    def flaky(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("transient glitch")
        return ModelResponse(parts=[TextPart("ok")])

    agent = Agent(FunctionModel(flaky))
    with pytest.raises(ValueError, match="glitch"):
        await cached_agent_run(agent, "q", "t", store=memory)
    result = await cached_agent_run(agent, "q", "t", store=memory)  # no loop turn in between
    assert result.output == "ok" and calls == 2


async def test_a_cancelled_flush_does_not_cancel_a_model_call(memory: MemoryStore) -> None:
    from pyai_caching import flush

    slow = CountingModel(delay=0.2)
    agent = Agent(slow.model, output_type=Profile)
    leader = asyncio.create_task(cached_agent_run(agent, "q", "profile", store=memory))
    await asyncio.sleep(0.02)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(flush(), 0.05)
    assert isinstance((await leader).output, Profile)


async def test_followers_get_the_answer_when_the_flight_is_cancelled_after_it_came(memory: MemoryStore) -> None:
    from pyai_caching._registry import loop_state

    slow = CountingModel(delay=0.1)
    agent = Agent(slow.model, output_type=Profile)
    leader = asyncio.create_task(cached_agent_run(agent, "q", "profile", store=memory))
    follower = asyncio.create_task(cached_agent_run(agent, "q", "profile", store=memory))
    await asyncio.sleep(0.01)
    flight = next(iter((await loop_state()).flights.values()))
    assert flight.task is not None
    task = flight.task
    flight.answer.add_done_callback(lambda _: task.cancel())  # e.g. the loop shutting down right then
    assert isinstance((await leader).output, Profile)
    assert isinstance((await asyncio.wait_for(follower, 2)).output, Profile)
    assert (await leader).cache_key in memory._entries  # and the paid answer was still stored


async def test_a_cancelled_leaders_paid_run_is_still_recorded(memory: MemoryStore) -> None:
    from pyai_caching import ExpenseEvent, flush, get_stats

    events: list[ExpenseEvent] = []

    class Recorder:
        def record(self, event: ExpenseEvent) -> None:
            events.append(event)

    slow = CountingModel(delay=0.1)
    agent = Agent(slow.model, output_type=Profile)
    leader = asyncio.create_task(cached_agent_run(agent, "q", "profile", store=memory, expense_recorder=Recorder()))
    await asyncio.sleep(0.02)
    leader.cancel()
    await flush()
    assert [(e.cached, e.cost) for e in events] == [(False, pytest.approx(1000 * 0.15 / 1e6 + 100 * 0.60 / 1e6))]
    stats = (await get_stats("profile", store=memory)).total
    assert (stats.misses, stats.hits) == (1, 0) and stats.cost_spent > 0


async def test_an_output_that_does_not_read_back_still_reaches_every_caller(memory: MemoryStore) -> None:
    from pydantic import field_serializer

    class Odd(BaseModel):
        x: int

        @field_serializer("x")
        def _dump(self, value: int) -> str:
            return f"x={value}"  # does not validate back as an int

    from pydantic_ai.models.test import TestModel

    agent = Agent(TestModel(), output_type=Odd)
    results = await asyncio.gather(*(cached_agent_run(agent, "q", "odd", store=memory) for _ in range(3)))
    assert all(isinstance(r.output, Odd) for r in results)
    assert sum(r.cached for r in results) == 2  # the followers, served the leader's answer


def test_many_event_loops_on_one_store_are_not_retained(agent: Agent[None, Profile], memory: MemoryStore) -> None:
    import gc

    from pyai_caching import _registry

    for _ in range(20):
        asyncio.run(cached_agent_run(agent, "q", "profile", store=memory))
    gc.collect()
    assert len(_registry._states) <= 1
    assert len(memory.__dict__["_close_hooks"]) == 1
    assert len(memory.__dict__["_pyai_caches"]) <= 1


