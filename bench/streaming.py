"""Time to first delta of a streamed hit, against a real redis-server.

    . .venv/bin/activate && python bench/streaming.py [--n 500]

Streams an answer of 40 chunks from a `FunctionModel` whose first chunk comes after `--latency` seconds (a model's
time to first token). Measures, per call, the time from entering the stream to its first delta and to its last:

- live: `agent.run_stream` (no cache), with the simulated latency;
- floor: `agent.run_stream` on an instant model (what PydanticAI itself costs to stream);
- `cached_agent_run_stream` hit on Redis (whole run replayed), and with `pace=1.0` (recorded timing);
- `ResponseCache` hit on Redis under `agent.run_stream` (per request: the agent loop still runs).

Targets: a streamed hit's first delta p50 <= 5 ms, and no slower than the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from bench import redis_server
from pyai_caching import RedisStore, ResponseCache, cached_agent_run_stream

CHUNKS = [f"word{i} " for i in range(40)]
TARGET_FIRST_DELTA_MS = 5.0


def streaming_model(latency: float) -> FunctionModel:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        if latency:
            await asyncio.sleep(latency)
        for chunk in CHUNKS:
            yield chunk

    return FunctionModel(stream_function=stream, model_name="gpt-4o-mini")


async def timed(open_stream: Callable[[], AbstractAsyncContextManager[Any]]) -> tuple[float, float]:
    """(ms to the first delta, ms to the last) of one stream read with `stream_text(delta=True, debounce_by=None)`."""
    started = time.perf_counter()
    first = None
    async with open_stream() as result:
        async for _ in result.stream_text(delta=True, debounce_by=None):
            if first is None:
                first = time.perf_counter()
    last = time.perf_counter()
    assert first is not None
    return (first - started) * 1000, (last - started) * 1000


async def measure(name: str, open_stream: Callable[[], AbstractAsyncContextManager[Any]], n: int) -> dict[str, float]:
    for _ in range(min(20, n)):
        await timed(open_stream)
    samples = [await timed(open_stream) for _ in range(n)]
    firsts, lasts = sorted(s[0] for s in samples), sorted(s[1] for s in samples)
    row = {
        "first_p50": statistics.median(firsts),
        "first_p99": firsts[int(len(firsts) * 0.99) - 1],
        "last_p50": statistics.median(lasts),
    }
    print(f"{name:<44} first delta p50 {row['first_p50']:7.3f} ms  p99 {row['first_p99']:7.3f} ms  "
          f"last delta p50 {row['last_p50']:7.3f} ms", flush=True)
    return row


async def main(n: int, latency: float, url: str) -> int:
    store = RedisStore.from_url(url)
    live_agent = Agent(streaming_model(latency))
    instant = Agent(streaming_model(0.0))
    per_request = Agent(streaming_model(latency), capabilities=[ResponseCache(task_name="bench-requests", store=store)])

    def cached(**kwargs: Any) -> Callable[[], AbstractAsyncContextManager[Any]]:
        return lambda: cached_agent_run_stream(live_agent, "stream me", "bench-stream", store=store, **kwargs)

    await timed(cached())  # record
    await timed(lambda: per_request.run_stream("stream me"))
    rows: dict[str, dict[str, float]] = {}
    rows["live"] = await measure(f"live agent.run_stream ({latency * 1000:.0f} ms to first token)", lambda: live_agent.run_stream("q"), max(5, n // 50))
    rows["floor"] = await measure("floor: agent.run_stream, instant model", lambda: instant.run_stream("q"), n)
    rows["hit"] = await measure("cached_agent_run_stream hit (Redis)", cached(), n)
    rows["paced"] = await measure("cached_agent_run_stream hit, pace=1.0", cached(pace=1.0), max(5, n // 50))
    rows["response_cache"] = await measure("ResponseCache hit under agent.run_stream", lambda: per_request.run_stream("stream me"), n)
    await store.aclose()
    hit = rows["hit"]["first_p50"]
    ok = hit <= TARGET_FIRST_DELTA_MS and hit <= rows["floor"]["first_p50"]
    print(f"\nstreamed hit first delta p50 {hit:.3f} ms (target <= {TARGET_FIRST_DELTA_MS} ms and <= floor "
          f"{rows['floor']['first_p50']:.3f} ms): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="streams per row")
    parser.add_argument("--latency", type=float, default=0.3, help="the live model's time to first token, seconds")
    args = parser.parse_args()
    with redis_server() as redis_url:
        code = asyncio.run(main(args.n, args.latency, redis_url))
    sys.exit(code)
