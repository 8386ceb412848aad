"""The first hit of an output type in a fresh process: `python bench/_first_hit.py URL store|hit`.

`store` makes the entry (a miss); `hit`, run in a new process, times the first `cached_agent_run` (a hit) from
the call to its return, after imports, and prints the milliseconds as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import date

from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import cached_agent_run


class Line(BaseModel):
    sku: str
    quantity: int
    price: float


class Invoice(BaseModel):
    number: str
    issued: date
    customer: str
    lines: list[Line]
    notes: str | None = None


def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    args = {"number": "INV-1", "issued": "2026-11-30", "customer": "ACME", "lines": [{"sku": "A", "quantity": 2, "price": 9.5}]}
    return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, args)])


async def main(url: str, phase: str) -> None:
    agent = Agent(FunctionModel(respond, model_name="gpt-4o-mini"), output_type=Invoice)
    started = time.perf_counter()
    result = await cached_agent_run(agent, "Extract the invoice.", "first-hit", redis_url=url)
    elapsed = time.perf_counter() - started
    if phase == "hit" and not result.cached:
        raise SystemExit("the first call in the fresh process was not a hit")
    print(json.dumps({"ms": elapsed * 1000, "cached": result.cached}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
