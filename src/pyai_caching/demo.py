"""Offline demo: an FAQ bot answering repeated customer questions through the cache.

    python -m pyai_caching.demo            # embedded store in a fresh temp dir, no Redis, no API key
    python -m pyai_caching.demo --dir .pyai_cache   # keep the cache: a second run is all hits
    LLM_CACHE_REDIS_URL=redis://localhost:6379/0 python -m pyai_caching.demo   # use Redis

The model is simulated (a PydanticAI `FunctionModel` named `gpt-4o-mini`, with realistic
latency and token usage), so the prices and savings printed are what that model would cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from ._config import ENV_REDIS_URL
from ._reports import get_stats
from ._run import cached_agent_run
from .recorders import ExpenseEvent
from .stores import LocalStore, RedisStore, Store

FAQ = {
    "How do I reset my password?": "Open Settings > Security and choose 'Reset password'; a link is emailed to you.",
    "What are your opening hours?": "Support is open Monday to Friday, 8:00-18:00 CET.",
    "How long does shipping take?": "Orders ship within 24 hours and arrive in 2-4 business days in the EU.",
    "Can I return an item?": "Yes, within 30 days of delivery, unused and in its original packaging.",
    "Do you ship internationally?": "We ship to 40 countries; rates are shown at checkout.",
    "How do I cancel my subscription?": "Go to Account > Subscription > Cancel; you keep access until the period ends.",
}
MODEL_NAME = "gpt-4o-mini"


def simulated_model(latency: float) -> FunctionModel:
    """A stand-in for gpt-4o-mini: answers from the FAQ after `latency` seconds, with real-looking usage."""

    async def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        question = str(messages[-1].parts[-1].content)  # type: ignore[union-attr]
        await asyncio.sleep(latency * random.uniform(0.8, 1.2))
        text = FAQ.get(question, "Let me connect you with a human agent.")
        return ModelResponse(
            parts=[TextPart(text)],
            usage=RequestUsage(input_tokens=420 + len(question) // 4, output_tokens=60 + len(text) // 4),
        )

    return FunctionModel(answer, model_name=MODEL_NAME)


class SpendTracker:
    """An expense recorder: sums what was spent and saved."""

    def __init__(self) -> None:
        self.spent = 0.0
        self.saved = 0.0

    def record(self, event: ExpenseEvent) -> None:
        self.spent += event.cost or 0.0
        self.saved += event.saved or 0.0


async def main(directory: Path | None, requests: int, latency: float) -> None:
    redis_url = os.environ.get(ENV_REDIS_URL)
    store: Store
    if redis_url:
        store, where = RedisStore.from_url(redis_url), f"Redis at {redis_url}"
    else:
        root = directory or Path(tempfile.mkdtemp(prefix="pyai_caching_demo_"))
        store, where = LocalStore(root), f"embedded store in {root}"
    print(f"FAQ bot on a simulated {MODEL_NAME}, cache: {where}\n")

    agent = Agent(simulated_model(latency), instructions="You are a helpful support agent. Answer briefly.")
    tracker = SpendTracker()
    rng = random.Random(4)
    questions = [rng.choice(list(FAQ)) for _ in range(requests)]
    started = time.perf_counter()
    print(f"{'#':>3}  {'question':<36} {'result':<6} {'latency':>9} {'cost':>10}")
    for i, question in enumerate(questions, 1):
        t0 = time.perf_counter()
        result = await cached_agent_run(
            agent, question, "faq", store=store, namespace="pyai_caching_demo", expense_recorder=tracker
        )
        elapsed = time.perf_counter() - t0
        label = "HIT" if result.cached else "MISS"
        cost = f"${result.cost:.6f}" if result.cost is not None else "unpriced"
        print(f"{i:>3}  {question:<36} {label:<6} {elapsed * 1000:>7.1f}ms {cost:>10}")
    wall = time.perf_counter() - started

    stats = (await get_stats("faq", store=store, namespace="pyai_caching_demo")).total
    print(
        f"\nthis run: {requests} requests in {wall:.2f}s, spent ${tracker.spent:.6f}, saved ${tracker.saved:.6f}"
        f"\nall runs on this cache: hit rate {stats.hit_rate:.0%} ({stats.hits} hits, {stats.misses} misses), "
        f"time saved {stats.time_saved:.2f}s, spent ${stats.cost_spent:.6f} vs saved ${stats.cost_saved:.6f}"
    )
    await store.aclose()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="cache directory to keep (default: a fresh temp dir)")
    parser.add_argument("--requests", type=int, default=25, help="number of customer questions (default 25)")
    parser.add_argument("--latency", type=float, default=0.6, help="simulated model latency in seconds")
    args = parser.parse_args()
    asyncio.run(main(args.dir, args.requests, args.latency))


if __name__ == "__main__":
    cli()
