"""Run by `test_store_problems.py` in its own process: after sync calls, the agent works on other event loops.

Its own process, because PydanticAI drops the HTTP clients it moves between loops without closing them (their
loop is gone, or belongs to other code): their kept-alive sockets are reported unclosed when that process ends.
Prints one line per step; exits non-zero at the first failing one.
"""

from __future__ import annotations

import asyncio
import sys
import warnings

from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from openai_server import FakeOpenAIServer
from pyai_caching import MemoryStore, cached_agent_run_sync


def main() -> int:
    warnings.simplefilter("ignore", ResourceWarning)
    with FakeOpenAIServer(keep_alive=True) as server:  # kept-alive connections, pooled per event loop
        agent = Agent(OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=server.base_url, api_key="k")))
        store = MemoryStore()
        steps = [
            ("cached sync", lambda: cached_agent_run_sync(agent, "one", "loops", store=store).output),
            ("run_sync", lambda: agent.run_sync("two").output),
            ("asyncio.run", lambda: asyncio.run(agent.run("three")).output),
            ("cached sync again", lambda: cached_agent_run_sync(agent, "four", "loops", store=store).output),
            ("asyncio.run again", lambda: asyncio.run(agent.run("five")).output),
            ("cached sync hit", lambda: str(cached_agent_run_sync(agent, "one", "loops", store=store).cached)),
        ]
        for name, step in steps:
            try:
                print(f"{name}: {step()}", flush=True)
            except Exception as exc:  # noqa: BLE001 - reported to the test
                print(f"{name}: FAILED {type(exc).__name__}: {exc}", flush=True)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
