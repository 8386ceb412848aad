"""Two callers of one key on two stores over the same Redis (two processes, as far as claims go)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import RedisStore, cached_agent_run


async def second_caller_of_a_slow_call(url: str, *, delay: float, arrive_after: float, claim_ttl: float = 15.0) -> tuple[Any, Any, list[int]]:
    """The first caller's result, the second's (arriving `arrive_after` seconds into a model call of `delay`
    seconds), and the model calls made."""
    calls: list[int] = []

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append(1)
        await asyncio.sleep(delay)
        return ModelResponse(parts=[TextPart("ok")])

    agent = Agent(FunctionModel(respond, model_name="m"))
    first_store, second_store = (RedisStore.from_url(url, claim_ttl=claim_ttl) for _ in range(2))
    try:
        first = asyncio.create_task(cached_agent_run(agent, "q", "t", store=first_store))
        await asyncio.sleep(arrive_after)
        second = await cached_agent_run(agent, "q", "t", store=second_store)
        return await first, second, calls
    finally:
        await first_store.aclose()
        await second_store.aclose()
