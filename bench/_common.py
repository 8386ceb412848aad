"""Workload pieces shared by `bench.py` (this repo) and `_old_workload.py` (pyai-caching 0.4.1).

Only depends on pydantic-ai-slim, pydantic and redis, so it imports in both venvs. Both libraries
are driven through the same `call(prompt)` coroutines and measured by the same functions here,
so their numbers are comparable.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

MODEL_NAME = "gpt-4o-mini"
"""Name the FunctionModel reports: both libraries price it from their built-in tables (no custom costs)."""

CONCURRENCY = 50
STAMPEDE_CALLERS = 20
STAMPEDE_DELAYS = (0.5, 2.0)

SMALL_TEXT_CHARS = 100
"""str output. The envelope around a run is ~1.8 KB by itself, so this gives a ~2 KB entry (the smallest real one)."""
LARGE_ITEMS = 640
"""BaseModel output with this many items: a ~100 KB entry (the tool-call args are stored as well as the output)."""


class Item(BaseModel):
    id: int
    name: str
    score: float
    tags: list[str]


class Report(BaseModel):
    title: str
    items: list[Item]


SMALL_TEXT = ("The cached answer to a small question. " * 10)[:SMALL_TEXT_CHARS]
LARGE_REPORT = Report(
    title="A large structured answer",
    items=[Item(id=i, name=f"item {i:05d}", score=i * 0.5, tags=["alpha", "beta"]) for i in range(LARGE_ITEMS)],
)
LARGE_ARGS = LARGE_REPORT.model_dump_json()

SIZES: dict[str, Any] = {"small": str, "large": Report}
"""Size name -> output type."""


def _respond(info: AgentInfo) -> ModelResponse:
    if info.output_tools:  # BaseModel output: answer through the output tool
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, LARGE_ARGS)])
    return ModelResponse(parts=[TextPart(SMALL_TEXT)])


class ModelCounter:
    """Counts calls to the model function."""

    def __init__(self) -> None:
        self.calls = 0


def make_agent(
    output_type: Any, delay: float = 0.0, counter: ModelCounter | None = None, name: str | None = "bench_agent"
) -> Agent[None, Any]:
    """An agent on a FunctionModel answering instantly (or after `delay` seconds) with a fixed-size output.

    Named by default: pyai-caching 0.4.1 puts `agent.name` in its key, and PydanticAI sets the name of an
    unnamed agent on its first run (from the caller's variable name), which changes 0.4.1's key after the
    first call. This repo's key does not use the name, so naming the agent changes nothing for it.
    """
    if delay:

        async def slow(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            if counter is not None:
                counter.calls += 1
            await asyncio.sleep(delay)
            return _respond(info)

        model = FunctionModel(slow, model_name=MODEL_NAME)
    else:

        def instant(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            if counter is not None:
                counter.calls += 1
            return _respond(info)

        model = FunctionModel(instant, model_name=MODEL_NAME)
    return Agent(model, output_type=output_type, name=name)


Call = Callable[[str], Awaitable[Any]]


# --- measurement -------------------------------------------------------------------------------


def freeze_heap() -> None:
    """Move every object alive now out of the collector's reach (`gc.freeze`), as long-running apps may do
    after startup: full collections then no longer walk the ~100k objects the imports left behind."""
    gc.collect()
    gc.freeze()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_us(samples_ns: list[int]) -> dict[str, float]:
    us = [s / 1000 for s in samples_ns]
    return {
        "p50": percentile(us, 50),
        "p99": percentile(us, 99),
        "mean": statistics.fmean(us),
        "n": len(us),
    }


async def sequential(call: Callable[[], Awaitable[Any]], n: int) -> list[int]:
    """Per-call latency in ns of `n` sequential awaits of `call()`."""
    gc.collect()
    out: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        await call()
        out.append(clock() - t0)
    return out


async def interleaved_sequential(calls: dict[str, Callable[[], Awaitable[Any]]], n: int, block: int = 100) -> dict[str, list[int]]:
    """`sequential` for several calls, alternating blocks of `block` calls so they share the machine's drift."""
    out: dict[str, list[int]] = {name: [] for name in calls}
    done = 0
    while done < n:
        size = min(block, n - done)
        for name, call in calls.items():
            out[name].extend(await sequential(call, size))
        done += size
    return out


async def _timed_burst(call: Callable[[], Awaitable[Any]], total: int, concurrency: int) -> float:
    """Seconds for `concurrency` callers to share `total` calls."""
    gc.collect()
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


async def throughput(call: Callable[[], Awaitable[Any]], total: int, concurrency: int = CONCURRENCY) -> float:
    """Calls per second with `concurrency` callers sharing `total` calls."""
    return total / await _timed_burst(call, total, concurrency)


async def interleaved_throughput(
    calls: dict[str, Callable[[], Awaitable[Any]]], total: int, rounds: int = 4, concurrency: int = CONCURRENCY
) -> dict[str, float]:
    """`throughput` for several calls, in alternating rounds of `total / rounds` calls each."""
    seconds = {name: 0.0 for name in calls}
    per_round = max(1, total // rounds)
    for _ in range(rounds):
        for name, call in calls.items():
            seconds[name] += await _timed_burst(call, per_round, concurrency)
    return {name: per_round * rounds / secs for name, secs in seconds.items()}


class LagMonitor:
    """A background task sleeping 1 ms in a loop; records how late it wakes up (event-loop blocking).

    Also records the garbage collector's full (generation 2) collections meanwhile, the usual
    cause of multi-millisecond stalls in a Python process.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.max_lag = 0.0
        self.gc_full = 0
        self.gc_full_max = 0.0
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_full += 1
            self.gc_full_max = max(self.gc_full_max, time.perf_counter() - self._gc_started)

    async def _run(self) -> None:
        clock = time.perf_counter
        while True:
            self._t0 = clock()
            await asyncio.sleep(self.interval)
            self.max_lag = max(self.max_lag, clock() - self._t0 - self.interval)

    async def __aenter__(self) -> LagMonitor:
        gc.collect()
        gc.callbacks.append(self._on_gc)
        self._t0 = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        # the sleep in progress counts too: a workload that never yields starves the ticker entirely
        self.max_lag = max(self.max_lag, time.perf_counter() - self._t0 - self.interval)
        gc.callbacks.remove(self._on_gc)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


BENCH_CLIENT_NAME = "bench-harness"
"""CLIENT SETNAME of the benchmark's own Redis clients (INFO reader, floor), left out of the counts."""


async def redis_clients(client: Any) -> tuple[int, int]:
    """(open connections not made by the harness, total_connections_received) as the server sees them."""
    listed = await client.client_list()
    stats = await client.info("stats")
    others = sum(1 for entry in listed if entry.get("name") != BENCH_CLIENT_NAME)
    return others, int(stats["total_connections_received"])


async def miss_overhead(bare: Call, cached: Call, n: int, tag: str, warmup: int = 20) -> dict[str, float]:
    """Interleaved bare `agent.run(p)` / cached run of a distinct prompt each (every cached call is a miss).

    Per-call times in µs; the two alternate which goes first, so neither always runs on a warmer cache.
    """
    for i in range(warmup):
        await bare(f"{tag} warm bare {i}")
        await cached(f"{tag} warm cached {i}")
    gc.collect()
    bare_ns: list[int] = []
    cached_ns: list[int] = []
    clock = time.perf_counter_ns
    for i in range(n):
        pair = [(bare, f"{tag} bare question number {i:06d}", bare_ns), (cached, f"{tag} miss question number {i:06d}", cached_ns)]
        for fn, prompt, out in pair if i % 2 == 0 else pair[::-1]:  # alternate which one goes first
            t0 = clock()
            await fn(prompt)
            out.append(clock() - t0)
    b, c = summary_us(bare_ns), summary_us(cached_ns)
    return {
        "bare_mean": b["mean"],
        "bare_p50": b["p50"],
        "cached_mean": c["mean"],
        "cached_p50": c["p50"],
        "cached_p99": c["p99"],
        "overhead_mean": c["mean"] - b["mean"],
        "overhead_p50": c["p50"] - b["p50"],
        "n": n,
    }


async def stampede(cached_for: Callable[[Any], Call], delay: float, prompt: str) -> int:
    """Model calls made by `STAMPEDE_CALLERS` concurrent identical cold calls to a model taking `delay` s."""
    counter = ModelCounter()
    agent = make_agent(str, delay=delay, counter=counter)
    call = cached_for(agent)
    await asyncio.gather(*(call(prompt) for _ in range(STAMPEDE_CALLERS)))
    return counter.calls


async def hit_workload(
    *,
    call: Call,
    prompt: str,
    n_seq: int,
    n_conc: int,
    warmup: int,
    info_client: Any,
    floor: dict[str, Callable[[], Awaitable[Any]]] | None = None,
) -> dict[str, Any]:
    """Hit latency, hit throughput, connection counts and loop lag of a library's `call` (entry already stored).

    `floor` calls, if given, are measured in the same runs, alternating with the hits in blocks, so
    hit/floor ratios compare like with like on a noisy machine. Their results come back under "floor".
    """
    floor = floor or {}
    hit = lambda: call(prompt)  # noqa: E731
    for _ in range(warmup):
        await hit()
    for extra in floor.values():  # open the floor client's connections now, so they are not counted below
        for _ in range(warmup):
            await extra()
        await throughput(extra, 2 * CONCURRENCY)
    after_warmup = await redis_clients(info_client)
    latencies = await interleaved_sequential({"hit": hit, **floor}, n_seq)
    after_seq = await redis_clients(info_client)
    rates = await interleaved_throughput({"hit": hit, **floor}, n_conc)
    after_conc = await redis_clients(info_client)
    # loop lag measured in separate passes, so the 1 ms ticker does not inflate the latencies above
    async with LagMonitor() as lag_seq:
        await sequential(hit, n_seq)
    async with LagMonitor() as lag_conc:
        await throughput(hit, n_conc)
    return {
        "latency": summary_us(latencies["hit"]),
        "rate": rates["hit"],
        "floor": {
            **{name: summary_us(latencies[name]) for name in floor},
            **{f"{name}_rate": rates[name] for name in floor},
        },
        "clients_after_warmup": after_warmup[0],
        "clients_after_seq": after_seq[0],
        "clients_after_conc": after_conc[0],
        "new_conns_seq": after_seq[1] - after_warmup[1],
        "new_conns_conc": after_conc[1] - after_seq[1],
        "n_seq": n_seq,
        "n_conc": n_conc,
        "lag_seq_ms": lag_seq.max_lag * 1000,
        "lag_conc_ms": lag_conc.max_lag * 1000,
        "gc_full_seq": lag_seq.gc_full,
        "gc_full_max_ms": max(lag_seq.gc_full_max, lag_conc.gc_full_max) * 1000,
    }
