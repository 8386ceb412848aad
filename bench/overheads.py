"""What the cache adds to a hit and to a miss, measured interleaved in one process (so machine drift hits both).

`bench.py` compares runs made minutes apart, and this VM's speed moves by 20% in minutes; to see what a change
did, run this against both checkouts, alternating:

    python bench/overheads.py                                 # this checkout
    PYTHONPATH=/path/to/other/checkout/src python bench/overheads.py

Rows (p50 of blocks of 100 calls, alternating with the rows they are compared to):
- hit: `cached_agent_run` hits on Redis (with and without the early read: the GET sent while the key is derived) and
  on a `MemoryStore`, the Redis floor (GET + decode) and decoding alone; "memory overhead" is the in-memory hit minus
  decoding: everything a hit does besides reading the entry.
- miss: a bare `agent.run` and `cached_agent_run` misses (a new prompt each) on Redis, on Redis without claims,
  and on a `MemoryStore`, as overheads over the bare run.
Starts its own redis-server on a free port (as `bench.py` does). A script, not a test: no targets here.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import make_agent  # noqa: E402
from bench import redis_server  # noqa: E402

import pyai_caching  # noqa: E402
from pyai_caching import MemoryStore, RedisStore, cached_agent_run  # noqa: E402
from pyai_caching._codec import decode  # noqa: E402


async def interleaved(calls: dict[str, Callable[[], Awaitable[object]]], rounds: int, block: int) -> dict[str, float]:
    """p50 seconds per call of each, measured in alternating blocks."""
    seen: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(block):
                started = time.perf_counter()
                await call()
                seen[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seen.items()}


async def main(url: str) -> None:
    import redis.asyncio as aioredis

    agent = make_agent(str)
    redis, no_claims, memory = RedisStore.from_url(url), RedisStore.from_url(url, claims=False), MemoryStore()
    no_early = RedisStore.from_url(url)
    no_early.starts_gets = lambda: False  # type: ignore[method-assign]
    raw = aioredis.from_url(url)
    key = (await cached_agent_run(agent, "q", "hits", store=redis)).cache_key
    await cached_agent_run(agent, "q", "hits", store=memory)
    data = await raw.get(key)

    async def floor() -> object:
        return decode(await raw.get(key), str)

    async def decoding() -> object:
        return decode(data, str)

    hits = await interleaved(
        {
            "floor": floor,
            "redis hit": lambda: cached_agent_run(agent, "q", "hits", store=redis),
            "redis hit, no early read": lambda: cached_agent_run(agent, "q", "hits", store=no_early),
            "memory hit": lambda: cached_agent_run(agent, "q", "hits", store=memory),
            "decode": decoding,
        },
        rounds=40,
        block=100,
    )
    us = {name: value * 1e6 for name, value in hits.items()}
    print(f"pyai_caching from {Path(pyai_caching.__file__).parent}")
    print(
        f"hit (µs): floor {us['floor']:.1f}, redis hit {us['redis hit']:.1f} ({us['redis hit'] / us['floor']:.2f}x), "
        f"without the early read {us['redis hit, no early read']:.1f} "
        f"({us['redis hit, no early read'] / us['floor']:.2f}x), "
        f"memory hit {us['memory hit']:.1f}, decode {us['decode']:.1f}; "
        f"memory overhead {us['memory hit'] - us['decode']:.1f}"
    )

    tag, counter = secrets.token_hex(4), iter(range(10**9))

    def fresh(kind: str) -> str:
        return f"{kind}-{tag}-{next(counter)}"

    misses = await interleaved(
        {
            "bare": lambda: agent.run(fresh("bare")),
            "redis": lambda: cached_agent_run(agent, fresh("r"), "misses", store=redis),
            "redis, claims=False": lambda: cached_agent_run(agent, fresh("n"), "misses", store=no_claims),
            "memory": lambda: cached_agent_run(agent, fresh("m"), "misses", store=memory),
        },
        rounds=30,
        block=30,
    )
    bare = misses.pop("bare")
    print(
        f"miss overhead over a bare agent.run of {bare * 1e3:.2f} ms: "
        + ", ".join(f"{name} +{(value - bare) * 1e3:.3f} ms" for name, value in misses.items())
    )
    for store in (redis, no_claims, no_early):
        await store.aclose()
    await raw.aclose()


if __name__ == "__main__":
    with redis_server() as redis_url:
        asyncio.run(main(redis_url))
