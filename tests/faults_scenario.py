"""A stream of calls while Redis is killed and restarted: what the tests check and `bench/faults.py` reports.

`run_stream(n, kill_at, restart_at)` starts its own redis-server on a free port, makes `n` calls over 20 prompts,
kills the server (SIGKILL) before call `kill_at` and starts it again on the same port before call `restart_at`.
It returns every call's output, whether it was cached, its latency, and the phase it ran in.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import RedisStore, cached_agent_run


@dataclass
class Call:
    prompt: str
    output: str
    cached: bool
    latency: float
    phase: str  # "up", "down", "restarted"


@dataclass
class Stream:
    calls: list[Call] = field(default_factory=list)
    model_calls: int = 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(port: int, directory: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            client.close()
            return process
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.02)


async def run_stream(n: int = 200, kill_at: int = 50, restart_at: int = 120, pause: float = 0.01) -> Stream:
    stream = Stream()

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        stream.model_calls += 1
        await asyncio.sleep(0.005)
        return ModelResponse(parts=[TextPart(f"answer to {messages[-1].parts[-1].content}")])

    agent = Agent(FunctionModel(respond, model_name="gpt-4o-mini"))
    with tempfile.TemporaryDirectory() as directory:
        port = _free_port()
        process = _start(port, Path(directory))
        store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0")
        phase = "up"
        try:
            for i in range(n):
                if i == kill_at:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    phase = "down"
                if i == restart_at:
                    process = _start(port, Path(directory))
                    phase = "restarted"
                prompt = f"p{i % 20}"
                started = time.perf_counter()
                result = await cached_agent_run(agent, prompt, "faults", store=store)
                stream.calls.append(Call(prompt, result.output, result.cached, time.perf_counter() - started, phase))
                await asyncio.sleep(pause)
        finally:
            await store.aclose()
            process.terminate()
            process.wait()
    return stream
