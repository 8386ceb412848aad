"""The hit/miss workload of `bench.py`, run against pyai-caching 0.4.1 from PyPI.

Runs in `bench/.venv-old` (the published package has the same import name `pyai_caching` as this
repo). Started by `bench.py --compare` as a subprocess against the same redis-server; prints one
JSON object on stdout. Library log lines go to stderr (bench.py counts them).

Usage: bench/.venv-old/bin/python bench/_old_workload.py '<json config>'
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import redis.asyncio as aioredis

import _common as c


def _check_install() -> dict[str, Any]:
    import importlib.metadata as md

    import pyai_caching

    origin = pyai_caching.__file__
    if "site-packages" not in origin:
        raise SystemExit(f"_old_workload.py imported pyai_caching from {origin}, not the 0.4.1 wheel")
    return {"version": md.version("pyai-caching"), "pydantic_ai": md.version("pydantic-ai-slim"), "redis": md.version("redis")}


async def main(cfg: dict[str, Any]) -> dict[str, Any]:
    from pyai_caching import cached_agent_run
    from pyai_caching.agent import CachedResult, create_cache_key

    if cfg.get("gc_freeze"):
        c.freeze_heap()
    url: str = cfg["redis_url"]
    use_async: bool = cfg["use_async"]
    info = aioredis.Redis.from_url(url, client_name=c.BENCH_CLIENT_NAME)
    out: dict[str, Any] = {"install": _check_install(), "use_async": use_async, "sizes": {}}

    def cached_for(agent: Any, task: str) -> c.Call:
        return lambda p: cached_agent_run(agent, p, task, redis_url=url, use_async=use_async)

    for size, output_type in c.SIZES.items():
        n = cfg["sizes"][size]
        agent = c.make_agent(output_type)
        call = cached_for(agent, f"bench-{size}")
        prompt = f"hit {size} prompt"
        first = await call(prompt)
        second = await call(prompt)
        expected = c.SMALL_TEXT if output_type is str else c.LARGE_REPORT
        if not isinstance(second, CachedResult) or second.output != expected or first.output != expected:
            raise SystemExit(f"0.4.1 did not serve a correct hit for {size}: {type(second).__name__}")
        entry = await info.get(create_cache_key(agent, prompt))
        res = await c.hit_workload(
            call=call, prompt=prompt, n_seq=n["seq"], n_conc=n["conc"], warmup=n["warmup"], info_client=info
        )
        res["entry_bytes"] = len(entry) if entry is not None else None
        res["hit_type"] = type(second).__name__
        res["miss"] = await c.miss_overhead(lambda p: agent.run(p), call, n["miss"], tag=f"old {size}")
        out["sizes"][size] = res

    # 0.4.1 keys on agent.name, which PydanticAI fills in on an unnamed agent's first run: check the effect
    counter = c.ModelCounter()
    unnamed = c.make_agent(str, counter=counter, name=None)
    probe = cached_for(unnamed, "unnamed")
    for _ in range(3):
        await probe("unnamed agent probe")
    out["unnamed_agent_model_calls_for_3_identical_calls"] = counter.calls

    stampede: dict[str, int] = {}
    for delay in c.STAMPEDE_DELAYS:
        t0 = time.perf_counter()
        stampede[str(delay)] = await c.stampede(
            lambda agent: cached_for(agent, "stampede"), delay, f"old stampede {delay} {time.time_ns()}"
        )
        stampede[f"{delay}_wall_s"] = round(time.perf_counter() - t0, 2)  # type: ignore[assignment]
    out["stampede"] = stampede
    await info.aclose()
    return out


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(main(config))))
