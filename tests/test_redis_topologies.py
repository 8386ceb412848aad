"""The cache on Redis Sentinel and Redis Cluster, for real (tests/redis_topologies.py starts them): entries, hits,
counters, clearing and copying work; a failover or a node restart in the middle of a stream of calls fails no call."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import MemoryStore, RedisStore, cached_agent_run, clear_cache_async, copy_entries, get_stats

pytestmark = pytest.mark.redis_server


def echo_agent(calls: list[str]) -> Agent[None, str]:
    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        prompt = messages[-1].parts[-1].content
        calls.append(prompt)
        await asyncio.sleep(0.01)
        return ModelResponse(parts=[TextPart(f"answer to {prompt}")])

    return Agent(FunctionModel(respond, model_name="gpt-4o-mini"))


async def exercise(url: str) -> None:
    """Entries, hits, counters, listing, copying and clearing on one topology."""
    calls: list[str] = []
    agent = echo_agent(calls)
    store = RedisStore.from_url(url)
    try:
        for round_ in range(2):
            for i in range(20):
                result = await cached_agent_run(agent, f"q{i}", "topology", store=store)
                assert result.output == f"answer to q{i}" and result.cached == (round_ == 1)
        assert len(calls) == 20
        assert len(await store.keys("pyai_caching:v2:topology:")) == 20
        stats = (await get_stats("topology", store=store)).tasks["topology"]
        assert (stats.hits, stats.misses) == (20, 20)
        assert await copy_entries(store, MemoryStore()) == 20
        assert await clear_cache_async(store=store, task_name="topology") == 20
        assert await store.keys("pyai_caching:") == []
    finally:
        await store.aclose()


async def test_the_cache_on_sentinel(redis_sentinel_clean: Any) -> None:
    await exercise(redis_sentinel_clean.url)


async def test_the_cache_on_a_cluster_spreads_entries_over_its_nodes(redis_cluster_clean: Any) -> None:
    await exercise(redis_cluster_clean.url)
    store = RedisStore.from_url(redis_cluster_clean.url)
    try:
        agent = echo_agent([])
        for i in range(30):
            await cached_agent_run(agent, f"spread {i}", "spread", store=store)
        nodes = {store.client.get_node_from_key(k).port for k in await store.keys("pyai_caching:v2:spread:")}  # type: ignore[union-attr]
        assert nodes == set(redis_cluster_clean.ports)
    finally:
        await store.aclose()


def _concurrent_in_two_loops(url: str, calls: list[str]) -> list[str]:
    """Two event loops (as two processes would: separate in-process flights) asking the same question at once."""
    agent = echo_agent(calls)
    outputs: list[str] = []

    async def slow_call() -> str:
        store = RedisStore.from_url(url)
        try:
            return (await cached_agent_run(agent, "shared", "claims", store=store)).output
        finally:
            await store.aclose()

    threads = [threading.Thread(target=lambda: outputs.append(asyncio.run(slow_call()))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outputs


@pytest.mark.parametrize("topology", ["redis_sentinel_clean", "redis_cluster_clean"])
def test_single_flight_across_loops_on_each_topology(topology: str, request: pytest.FixtureRequest) -> None:
    setup = request.getfixturevalue(topology)
    calls: list[str] = []
    assert _concurrent_in_two_loops(setup.url, calls) == ["answer to shared"] * 2
    assert calls == ["shared"]


async def stream(url: str, disrupt: Any, n: int = 60) -> tuple[list[bool], int]:
    """`n` calls over 10 prompts; `disrupt()` runs in a thread after the 20th. Every call must answer correctly."""
    calls: list[str] = []
    agent = echo_agent(calls)
    store = RedisStore.from_url(url)
    cached: list[bool] = []
    disruption: asyncio.Future[Any] | None = None
    try:
        for i in range(n):
            if i == 20:
                disruption = asyncio.get_running_loop().run_in_executor(None, disrupt)
            result = await cached_agent_run(agent, f"p{i % 10}", "faults", store=store)
            assert result.output == f"answer to p{i % 10}"
            cached.append(result.cached)
            await asyncio.sleep(0.05)
        assert disruption is not None
        await disruption
        # caching resumes after the disruption (once the store's 5 s breaker lets it be tried again)
        deadline = asyncio.get_running_loop().time() + 20
        while not (await cached_agent_run(agent, "p0", "faults", store=store)).cached:
            assert asyncio.get_running_loop().time() < deadline, "caching did not resume"
            await asyncio.sleep(0.25)
    finally:
        await store.aclose()
    return cached, len(calls)


async def test_a_sentinel_failover_in_the_middle_of_a_stream_fails_no_call(redis_sentinel_clean: Any) -> None:
    cached, _ = await stream(redis_sentinel_clean.url, redis_sentinel_clean.failover)
    assert len(cached) == 60 and sum(cached) >= 10  # every call answered; the cache served before and after


async def test_a_cluster_node_restart_in_the_middle_of_a_stream_fails_no_call(redis_cluster_clean: Any) -> None:
    cached, calls = await stream(redis_cluster_clean.url, lambda: redis_cluster_clean.restart_node(1))
    assert len(cached) == 60 and sum(cached) >= 10


async def test_the_sentinel_master_killed_mid_stream_fails_no_call(tmp_path: Any) -> None:
    from redis_topologies import sentinel_topology

    with sentinel_topology(tmp_path) as setup:
        cached, _ = await stream(setup.url, setup.kill_master)
    assert len(cached) == 60 and sum(cached) >= 10


@pytest.fixture
def cluster_mode_node(tmp_path: Any) -> Any:
    """One redis-server in cluster mode owning every slot, reached by a plain `redis://` client (a one-shard
    cluster-mode database, or a cluster behind a proxy endpoint): scripts over keys of two slots are refused."""
    import subprocess
    import time

    from redis_topologies import _binary, _command, _free_port

    port = _free_port(with_bus=True)
    process = subprocess.Popen(
        [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
         "--cluster-config-file", str(tmp_path / "nodes.conf"), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                _command(port, "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        while "cluster_state:ok" not in _command(port, "CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "the node did not take its slots"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.redis_server
async def test_claims_work_on_a_cluster_mode_server_reached_by_a_plain_client(cluster_mode_node: str) -> None:
    """Such a server refuses the claim's one-script form (entry and lock hash to different slots): the store falls
    back to single-key commands, so a second process (another store) still waits for the first one's answer."""
    import redis as redis_sync
    from two_callers import second_caller_of_a_slow_call

    first, second, calls = await second_caller_of_a_slow_call(cluster_mode_node, delay=0.5, arrive_after=0.2)
    assert first.output == second.output == "ok"
    assert second.cached and calls == [1]
    with redis_sync.Redis.from_url(cluster_mode_node) as admin:
        assert admin.keys("*lock*") == []  # released
