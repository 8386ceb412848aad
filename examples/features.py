"""Every feature in the README, runnable offline: `python examples/features.py`.

The model is a PydanticAI `FunctionModel` standing in for a real one (named like a real model,
so it is priced), and the store is an embedded `LocalStore` in a temporary directory.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from pyai_caching import (
    CacheMissError,
    ExpenseEvent,
    FixtureStore,
    LocalStore,
    ModelCosts,
    cached_agent_run,
    copy_entries,
    flush,
    llm_cache,
    get_stats,
)
from pyai_caching.exceptions import UsageLimitExceeded


class UserProfile(BaseModel):
    name: str
    age: int
    interests: list[str]


def profiler_model(name: str = "claude-3-5-haiku-latest", *, rate_limited_first: int = 0) -> FunctionModel:
    """Answers with a profile; the first `rate_limited_first` calls get an HTTP 429."""
    calls = 0

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal calls
        calls += 1
        if calls <= rate_limited_first:
            raise ModelHTTPError(429, name, body={"error": "rate limited"})
        args = {"name": "Alex", "age": 30, "interests": ["hiking", "science fiction"]}
        # a prompt-cached system prompt: 800 of the 1,200 input tokens are cache reads
        usage = RequestUsage(input_tokens=1200, cache_read_tokens=800, output_tokens=60)
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, args)], usage=usage)

    return FunctionModel(respond, model_name=name)


async def main(root: Path) -> None:
    store = LocalStore(root)
    history = [{"role": "user", "content": "Hi, I'm Alex, 30, and I enjoy hiking and science fiction."}]
    agent = Agent(profiler_model(), output_type=UserProfile, system_prompt="Extract a profile.")

    # Quick start: a miss, then a hit answered from the store as a real AgentRunResult.
    first = await cached_agent_run(agent, "Make a profile of the user", "make_profile", message_history=history, store=store)
    again = await cached_agent_run(agent, "Make a profile of the user", "make_profile", message_history=history, store=store)
    print(f"quick start: {again.output!r}; cached {first.cached} -> {again.cached}; "
          f"cost ${first.cost:.6f} -> ${again.cost:.6f} (saved ${again.saved_cost:.6f})")

    # Configuration: a TTL per call (seconds or timedelta) and a namespace.
    short = await cached_agent_run(agent, "Profile, briefly", "make_profile", message_history=history,
                                   store=store, ttl=timedelta(hours=6), namespace="myapp")
    print(f"configuration: stored under {short.cache_key}")

    # Pricing: custom costs for a model no table knows.
    custom = Agent(profiler_model("my-custom-model"), output_type=UserProfile)
    costs = {"my-custom-model": ModelCosts(cost_per_million_input_tokens=1.0, cost_per_million_output_tokens=2.0,
                                           cost_per_million_caching_hit_tokens=0.1)}
    priced = await cached_agent_run(custom, "Profile", "custom", store=store, custom_costs=costs)
    print(f"pricing: ${priced.cost:.6f} (400 input at $1/M + 800 cache reads at $0.1/M + 60 output at $2/M)")

    # Expense tracking: the seed's function signature, and an event recorder.
    def log_expense(model: str, task_name: str, cost: float) -> None:
        print(f"expense: {model} {task_name} ${cost:.6f}")

    class Ledger:
        def __init__(self) -> None:
            self.spent = self.saved = 0.0

        def record(self, event: ExpenseEvent) -> None:
            self.spent += event.cost or 0.0
            self.saved += event.saved or 0.0

    ledger = Ledger()
    await cached_agent_run(agent, "Make a profile of the user", "make_profile", message_history=history,
                           store=store, expense_recorder=log_expense)
    await cached_agent_run(agent, "Another question", "make_profile", store=store, expense_recorder=ledger)
    await cached_agent_run(agent, "Another question", "make_profile", store=store, expense_recorder=ledger)
    print(f"ledger: spent ${ledger.spent:.6f}, saved ${ledger.saved:.6f}")

    # Rate limits: two 429s are waited out with exponential backoff ...
    flaky = Agent(profiler_model(rate_limited_first=2), output_type=UserProfile)
    ok = await cached_agent_run(flaky, "Profile", "flaky", store=store, initial_wait=0.05, max_wait=1.0)
    print(f"rate limits: answered after retries: {ok.output.name}")
    # ... and a provider that keeps rate limiting ends in UsageLimitExceeded after max_wait.
    hopeless = Agent(profiler_model(rate_limited_first=100), output_type=UserProfile)
    try:
        await cached_agent_run(hopeless, "Profile, please", "flaky", store=store, initial_wait=0.05, max_wait=0.2)
    except UsageLimitExceeded as exc:
        print(f"rate limits: gave up: {type(exc.__cause__).__name__} {exc.__cause__}")

    # Stats and a cost report.
    await flush()
    report = await get_stats(store=store)
    total = report.total
    print(f"stats: hit rate {total.hit_rate:.0%} ({total.hits} hits, {total.misses} misses), "
          f"spent ${total.cost_spent:.6f}, saved ${total.cost_saved:.6f}")
    for task, stats in report.tasks.items():
        print(f"  {task}: {stats.requests} requests, hit rate {stats.hit_rate:.0%}")

    # Recording for tests: copy answers into reviewable fixture files, replay them, explain a miss.
    fixtures = FixtureStore(root / "fixtures")
    copied = await copy_entries(store, fixtures, task_name="make_profile")
    replayed = await cached_agent_run(agent, "Make a profile of the user", "make_profile", message_history=history,
                                      store=fixtures, mode="replay")
    print(f"recording: {copied} entries copied to fixtures; replayed {replayed.output.name} (cached {replayed.cached})")
    try:
        await cached_agent_run(agent, "Make a profile of the user", "make_profile", message_history=history,
                               store=fixtures, mode="replay", model_settings={"temperature": 0.7})
    except CacheMissError as exc:
        print(f"recording: replay miss explained: {exc.explanation.differences}")

    # A decorator for any LLM call: the function body runs once per distinct arguments.
    @llm_cache("summaries", store=store)
    async def summarize(text: str) -> UserProfile:
        print("decorator: the function ran")
        return UserProfile(name=text.split()[0], age=30, interests=["hiking"])

    first_profile, second_profile = await summarize("Alex likes hiking"), await summarize("Alex likes hiking")
    print(f"decorator: {second_profile.name} twice, same value: {first_profile == second_profile}")
    await store.aclose()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="pyai_caching_features_") as directory:
        asyncio.run(main(Path(directory)))
