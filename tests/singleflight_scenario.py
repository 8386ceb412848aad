"""One process of the cross-process single-flight tests: many concurrent identical-prompt calls against a shared store.

Usage: python singleflight_scenario.py STORE CALLS_FILE START_AT PROMPTS CALLERS DELAY [CLAIM_TTL]
STORE is `redis://...` or a directory. Each model call appends a line to CALLS_FILE; the process prints one JSON line
{"outputs": [...], "cached": n, "started": t0, "finished": t1}. Calls start at the Unix time START_AT, so every process starts together.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import LocalStore, RedisStore, Store, cached_agent_run


def main() -> None:
    store_spec, calls_file, start_at, prompts, callers, delay = sys.argv[1:7]
    claim_ttl = float(sys.argv[7]) if len(sys.argv) > 7 else 15.0
    os.environ["MODEL_DELAY"] = delay
    os.environ["CALLS_FILE"] = calls_file

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        prompt = messages[-1].parts[-1].content
        with open(os.environ["CALLS_FILE"], "a") as f:
            f.write(f"{os.getpid()} {prompt}\n")
        await asyncio.sleep(float(os.environ["MODEL_DELAY"]))  # read at call time: not part of the key
        return ModelResponse(parts=[TextPart(f"answer to {prompt}")])

    agent = Agent(FunctionModel(respond, model_name="gpt-4o-mini"))

    async def run() -> None:
        store: Store = (
            RedisStore.from_url(store_spec, claim_ttl=claim_ttl)
            if store_spec.startswith("redis")
            else LocalStore(store_spec)
        )
        await asyncio.sleep(max(0.0, float(start_at) - time.time()))
        started = time.time()
        results = await asyncio.gather(
            *(cached_agent_run(agent, f"prompt {i % int(prompts)}", "stampede", store=store) for i in range(int(callers)))
        )
        finished = time.time()
        await store.aclose()
        summary = {"outputs": [r.output for r in results], "cached": sum(r.cached for r in results)}
        print(json.dumps({**summary, "started": started, "finished": finished}), flush=True)

    asyncio.run(run())


if __name__ == "__main__":
    main()
