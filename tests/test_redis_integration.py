"""The front door against a real redis-server (started by conftest): TTLs, key layout, unix sockets,
fail-open when Redis is down / stalled / paused / corrupt, single-flight, shared stats, connections.

Agents run on `FunctionModel`: no model request ever leaves the process.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import socket
import time
import warnings
from typing import Any
import weakref
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import (
    CachedAgentRunResult,
    flush,
    CacheError,
    MemoryStore,
    ModelCosts,
    RedisStore,
    TaskStats,
    cached_agent_run,
    cached_agent_run_sync,
)
from pyai_caching import _portal

from pyai_caching._registry import loop_state


pytestmark = pytest.mark.redis_server

LOGGER = "pyai_caching"
MODEL_NAME = "test-llm"
COSTS = {MODEL_NAME: ModelCosts(cost_per_million_input_tokens=1.0, cost_per_million_output_tokens=2.0)}
FIFTEEN_DAYS_MS = 15 * 24 * 3600 * 1000
KEY_RE = re.compile(r"^pyai_caching:v2:(?P<task>[^:]+):(?P<digest>[0-9a-f]{64})$")


class CountingModel:
    """A FunctionModel function answering "answer to <prompt>", counting calls, optionally slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        prompt = next(p.content for p in messages[-1].parts if isinstance(p, UserPromptPart))
        return ModelResponse(parts=[TextPart(f"answer to {prompt}")], model_name=MODEL_NAME)


@pytest.fixture
def model() -> CountingModel:
    return CountingModel()


@pytest.fixture
def agent(model: CountingModel) -> Agent[None, str]:
    return Agent(FunctionModel(model, model_name=MODEL_NAME), instructions="Answer briefly.")


@pytest.fixture
def admin(redis_url: str, redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    """A plain sync client on the (flushed) real server, to look at what the library wrote."""
    with redis_server.client() as client:
        yield client


def entry_keys(admin: redis.Redis, namespace: str = "pyai_caching") -> list[str]:
    return sorted(k.decode() for k in admin.keys(f"{namespace}:v2:*"))


def cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


async def cached_run(*args: Any, **kwargs: Any) -> CachedAgentRunResult[Any]:
    """`cached_agent_run`, returning once a miss's entry is written too (these tests read Redis directly)."""
    return await cached_agent_run(*args, **kwargs)


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_count(admin: redis.Redis) -> int:
    return len(admin.client_list())


def wait_for_client_count(admin: redis.Redis, expected: int, timeout: float = 2.0) -> int:
    """The server notices closed connections asynchronously: poll briefly."""
    deadline = time.monotonic() + timeout
    while (count := client_count(admin)) > expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


# --- TTL ------------------------------------------------------------------------------------------


async def test_requested_ttl_is_set_on_the_key(agent: Agent[None, str], admin: redis.Redis, redis_url: str) -> None:
    result = await cached_run(agent, "q", "ttl", redis_url=redis_url, ttl=60, custom_costs=COSTS)
    assert result.cache_key is not None
    pttl = admin.pttl(result.cache_key)
    assert 55_000 < pttl <= 60_000

    other = await cached_run(agent, "q2", "ttl", redis_url=redis_url, ttl=timedelta(minutes=2), custom_costs=COSTS)
    assert 115_000 < admin.pttl(other.cache_key) <= 120_000


async def test_default_ttl_is_15_days(agent: Agent[None, str], admin: redis.Redis, redis_url: str) -> None:
    result = await cached_run(agent, "q", "ttl", redis_url=redis_url, custom_costs=COSTS)
    assert FIFTEEN_DAYS_MS - 10_000 < admin.pttl(result.cache_key) <= FIFTEEN_DAYS_MS


async def test_ttl_from_the_environment(
    agent: Agent[None, str], admin: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_CACHE_TTL", "120")
    result = await cached_run(agent, "q", "ttl", redis_url=redis_url, custom_costs=COSTS)
    assert 115_000 < admin.pttl(result.cache_key) <= 120_000

    explicit = await cached_run(agent, "q2", "ttl", redis_url=redis_url, ttl=30, custom_costs=COSTS)
    assert 25_000 < admin.pttl(explicit.cache_key) <= 30_000  # the argument wins over the env

    monkeypatch.setenv("LLM_CACHE_TTL", "0")  # documented: no expiry
    forever = await cached_run(agent, "q3", "ttl", redis_url=redis_url, custom_costs=COSTS)
    assert admin.pttl(forever.cache_key) == -1


async def test_expired_entry_is_a_miss(agent: Agent[None, str], model: CountingModel, redis_url: str) -> None:
    first = await cached_run(agent, "q", "ttl", redis_url=redis_url, ttl=1, custom_costs=COSTS)
    hit = await cached_run(agent, "q", "ttl", redis_url=redis_url, ttl=1, custom_costs=COSTS)
    assert (first.cached, hit.cached, model.calls) == (False, True, 1)
    await asyncio.sleep(1.2)
    again = await cached_run(agent, "q", "ttl", redis_url=redis_url, ttl=1, custom_costs=COSTS)
    assert again.cached is False
    assert model.calls == 2
    assert again.output == "answer to q"


# --- key layout -----------------------------------------------------------------------------------


async def test_key_format_in_redis(agent: Agent[None, str], admin: redis.Redis, redis_url: str) -> None:
    result = await cached_run(agent, "q", "faq", redis_url=redis_url, custom_costs=COSTS)
    keys = entry_keys(admin)
    assert keys == [result.cache_key]
    match = KEY_RE.match(keys[0])
    assert match is not None and match["task"] == "faq"
    assert admin.type(keys[0]) == b"string"
    assert json.loads(admin.get(keys[0]))["format"] == 1

    await cached_run(agent, "q", "other_task", redis_url=redis_url, custom_costs=COSTS)
    digests = {KEY_RE.match(k)["digest"] for k in entry_keys(admin)}  # type: ignore[index]
    assert len(entry_keys(admin)) == 2 and len(digests) == 1  # the task groups entries, the digest is the request


async def test_namespace_changes_the_prefix(
    agent: Agent[None, str], model: CountingModel, admin: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = await cached_run(agent, "q", "faq", redis_url=redis_url, namespace="myapp", custom_costs=COSTS)
    assert result.cache_key is not None and result.cache_key.startswith("myapp:v2:faq:")
    assert entry_keys(admin, "myapp") == [result.cache_key]
    assert entry_keys(admin) == []

    monkeypatch.setenv("LLM_CACHE_NAMESPACE", "fromenv")
    env = await cached_run(agent, "q", "faq", redis_url=redis_url, custom_costs=COSTS)
    assert env.cache_key is not None and env.cache_key.startswith("fromenv:v2:faq:")
    assert env.cached is False and model.calls == 2  # namespaces do not share entries

    await flush()
    assert admin.hgetall("myapp:stats:faq")[b"misses"] == b"1"
    assert admin.hgetall("fromenv:stats:faq")[b"misses"] == b"1"


async def test_unix_socket_url(agent: Agent[None, str], model: CountingModel, admin: redis.Redis, redis_server) -> None:  # type: ignore[no-untyped-def]
    url = redis_server.unix_url
    assert url.startswith("unix://")
    first = await cached_run(agent, "q", "unix", redis_url=url, custom_costs=COSTS)
    second = await cached_run(agent, "q", "unix", redis_url=url, custom_costs=COSTS)
    assert (first.cached, second.cached, model.calls) == (False, True, 1)
    assert second.output == "answer to q"
    assert entry_keys(admin) == [first.cache_key]  # the same server, seen over TCP


# --- fail open ------------------------------------------------------------------------------------


@pytest.fixture
def store_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Redis commands the stores actually tried (a store skipped by its breaker tries none)."""
    attempts: list[str] = []
    original = RedisStore._call

    async def counted(self: RedisStore, what: str, command: Any, **kwargs: Any) -> Any:
        attempts.append(what)
        return await original(self, what, command, **kwargs)

    monkeypatch.setattr(RedisStore, "_call", counted)
    return attempts


async def test_redis_down_fails_open(
    agent: Agent[None, str], model: CountingModel, caplog: pytest.LogCaptureFixture, store_attempts: list[str]
) -> None:
    """A store that is down costs one failed command, then is skipped (no timeout per call)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    url = f"redis://127.0.0.1:{unused_port()}/0"
    for _ in range(5):
        result = await cached_run(agent, "q", "down", redis_url=url, custom_costs=COSTS)
        assert result.output == "answer to q"
        assert result.cached is False
        assert result.cost is not None and result.cost > 0
    assert store_attempts == ["GET"]  # the first read failed; the breaker skipped everything after it
    assert model.calls == 5
    messages = cache_warnings(caplog)
    assert len(messages) == 1, messages
    assert "cache store" in messages[0]


async def test_redis_stalled_fails_open_quickly(
    agent: Agent[None, str], model: CountingModel, caplog: pytest.LogCaptureFixture, store_attempts: list[str]
) -> None:
    """A server that accepts connections and never answers costs two timeouts: a timed-out command is sent once
    more (a busy event loop also times commands out), then the breaker skips the store afterwards."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    writers: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the client gives up and disconnects

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    try:
        url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
        first = await cached_run(agent, "q", "stalled", redis_url=url, custom_costs=COSTS)
        second = await cached_run(agent, "q", "stalled", redis_url=url, custom_costs=COSTS)
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
    assert len(writers) == 2, "timed out, sent once more on a new connection, then skipped"
    assert store_attempts == ["GET"]
    assert (first.output, second.output) == ("answer to q", "answer to q")
    assert (first.cached, second.cached, model.calls) == (False, False, 2)
    assert len(cache_warnings(caplog)) == 1


async def test_redis_paused_midway_fails_open_then_recovers(
    agent: Agent[None, str],
    model: CountingModel,
    redis_server,  # type: ignore[no-untyped-def]
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    store_attempts: list[str],
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    await cached_run(agent, "q", "paused", redis_url=redis_url, custom_costs=COSTS)
    assert (await cached_run(agent, "q", "paused", redis_url=redis_url, custom_costs=COSTS)).cached

    with redis_server.client() as pauser:
        pauser.execute_command("CLIENT", "PAUSE", 2000, "ALL")  # every client's commands now block server-side
    try:
        store_attempts.clear()
        during = await cached_run(agent, "q", "paused", redis_url=redis_url, custom_costs=COSTS)
        tried_while_paused = list(store_attempts)
    finally:
        with redis_server.client() as unpauser:  # paused too: returns once the pause is over
            unpauser.execute_command("CLIENT", "UNPAUSE")
    # one command of the call timed out (twice: it is sent once more), then the breaker skipped the rest of it; the
    # counters of the earlier calls may be flushed while it waits (nor does any wait out the whole 2 s pause)
    assert [a for a in tried_while_paused if a != "HINCRBYFLOAT"] == ["GET"]
    assert during.output == "answer to q"
    assert during.cached is False and model.calls == 2
    assert len(cache_warnings(caplog)) == 1

    # the breaker keeps skipping the store for its cooldown: still a miss, no new warning
    assert (await cached_run(agent, "q", "paused", redis_url=redis_url, custom_costs=COSTS)).cached is False
    assert model.calls == 3
    # after the cooldown (fast-forwarded) the store is used again and the recovery is logged
    for cache in (await loop_state()).owned.values():
        cache.guarded.clock = lambda: time.monotonic() + 3600
    after = await cached_run(agent, "q", "paused", redis_url=redis_url, custom_costs=COSTS)
    assert after.cached is True and model.calls == 3
    messages = cache_warnings(caplog)
    assert len(messages) == 2 and "reachable again" in messages[1]


async def test_killed_connections_are_replaced(
    agent: Agent[None, str], model: CountingModel, admin: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    await cached_run(agent, "q", "killed", redis_url=redis_url, custom_costs=COSTS)
    killed = admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert killed >= 1
    result = await cached_run(agent, "q", "killed", redis_url=redis_url, custom_costs=COSTS)
    assert result.output == "answer to q"
    assert result.cached is True and model.calls == 1  # the dead pooled connection is noticed and replaced
    assert cache_warnings(caplog) == []


async def test_corrupt_entry_is_a_miss_and_gets_overwritten(
    agent: Agent[None, str], model: CountingModel, admin: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    first = await cached_run(agent, "q", "corrupt", redis_url=redis_url, custom_costs=COSTS)
    key = first.cache_key
    assert key is not None
    for garbage in (b"\x00\xffnot json at all", b'{"format": 99}', b'{"format": 1, "run": 42}'):
        await flush()  # the previous miss's entry is written just after the call returns
        admin.set(key, garbage)
        result = await cached_run(agent, "q", "corrupt", redis_url=redis_url, custom_costs=COSTS)
        await flush()
        assert result.cached is False
        assert result.output == "answer to q"
        stored = json.loads(admin.get(key))
        assert stored["format"] == 1  # overwritten with a valid entry...
        assert 0 < admin.pttl(key) <= FIFTEEN_DAYS_MS  # ...with a TTL again
    assert model.calls == 4
    assert (await cached_run(agent, "q", "corrupt", redis_url=redis_url, custom_costs=COSTS)).cached
    assert model.calls == 4
    unreadable = [m for m in cache_warnings(caplog) if "unreadable cache entry" in m]
    assert len(unreadable) == 3

    await flush()
    stats = TaskStats.from_counters({k.decode(): float(v) for k, v in admin.hgetall("pyai_caching:stats:corrupt").items()})
    assert (stats.misses, stats.hits, stats.errors) == (4, 1, 3)


# --- concurrency and stats ------------------------------------------------------------------------


async def test_concurrent_identical_runs_call_the_model_once(admin: redis.Redis, redis_url: str) -> None:
    slow = CountingModel(delay=0.2)
    agent = Agent(FunctionModel(slow, model_name=MODEL_NAME))
    results = await asyncio.gather(
        *(cached_run(agent, "same question", "burst", redis_url=redis_url, custom_costs=COSTS) for _ in range(20))
    )
    assert slow.calls == 1
    assert {r.output for r in results} == {"answer to same question"}
    assert sorted(r.cached for r in results) == [False] + [True] * 19
    assert len({id(r) for r in results}) == 20
    assert len(entry_keys(admin)) == 1

    await flush()
    stats = admin.hgetall("pyai_caching:stats:burst")
    assert (float(stats[b"hits"]), float(stats[b"misses"])) == (19.0, 1.0)


async def test_burst_beyond_the_connection_limit_queues(
    agent: Agent[None, str], model: CountingModel, admin: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """More concurrent runs than pooled connections wait briefly for one instead of failing the store."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    store = RedisStore.from_url(redis_url, max_connections=4, timeout=1.0)  # a loaded CI machine is slow
    try:
        prompts = [f"q{i}" for i in range(40)]
        first = await asyncio.gather(*(cached_run(agent, p, "wide", store=store, custom_costs=COSTS) for p in prompts))
        second = await asyncio.gather(*(cached_run(agent, p, "wide", store=store, custom_costs=COSTS) for p in prompts))
        await flush()
    finally:
        await store.aclose()
    assert [r.output for r in first] == [r.output for r in second] == [f"answer to {p}" for p in prompts]
    assert not any(r.cached for r in first)
    assert all(r.cached for r in second)
    assert model.calls == 40
    assert len(entry_keys(admin)) == 40
    assert cache_warnings(caplog) == []


async def test_stats_add_up_across_two_clients(agent: Agent[None, str], model: CountingModel, admin: redis.Redis, redis_url: str) -> None:
    a = RedisStore.from_url(redis_url)
    b = RedisStore.from_url(redis_url)
    try:
        plan = [(a, "q1", False), (b, "q1", True), (b, "q2", False), (a, "q2", True), (a, "q1", True), (b, "q3", False)]
        for store, prompt, cached in plan:
            result = await cached_run(agent, prompt, "shared", store=store, custom_costs=COSTS)
            assert result.cached is cached, (prompt, cached)
        assert model.calls == 3
        assert admin.exists("pyai_caching:stats:shared") == 0  # still buffered in memory

        await flush()
        groups = await a.get_counters("pyai_caching:stats:")
        assert groups == await b.get_counters("pyai_caching:stats:")
        assert set(groups) == {"pyai_caching:stats:shared"}
        stats = TaskStats.from_counters(groups["pyai_caching:stats:shared"])
        assert (stats.hits, stats.misses, stats.errors, stats.uncached) == (3, 3, 0, 0)
        assert stats.cost_spent > 0
        assert stats.cost_saved == pytest.approx(stats.cost_spent)  # q1 twice and q2 once served; all cost the same
        assert stats.time_saved > 0

        # a second round from the other client keeps adding up
        await cached_run(agent, "q3", "shared", store=a, custom_costs=COSTS)
        await flush()
        assert (await b.get_counters("pyai_caching:stats:shared"))["pyai_caching:stats:shared"]["hits"] == 4.0
    finally:
        await a.aclose()
        await b.aclose()


async def test_stats_are_flushed_by_the_timer(agent: Agent[None, str], admin: redis.Redis, redis_url: str) -> None:
    await cached_run(agent, "q", "timer", redis_url=redis_url, custom_costs=COSTS)
    await cached_run(agent, "q", "timer", redis_url=redis_url, custom_costs=COSTS)
    await asyncio.sleep(0.7)
    assert {k: float(v) for k, v in admin.hgetall("pyai_caching:stats:timer").items() if k in (b"hits", b"misses")} == {
        b"hits": 1.0,
        b"misses": 1.0,
    }


# --- connections and event loops ------------------------------------------------------------------


def test_sync_calls_reuse_connections(agent: Agent[None, str], model: CountingModel, admin: redis.Redis, redis_url: str) -> None:
    cached_agent_run_sync(agent, "warm up", "sync", redis_url=redis_url, custom_costs=COSTS)
    before = client_count(admin)
    for i in range(30):
        result = cached_agent_run_sync(agent, f"q{i % 5}", "sync", redis_url=redis_url, custom_costs=COSTS)
        assert result.output == f"answer to q{i % 5}"
        assert result.cached is (i >= 5)
    after = client_count(admin)
    assert after <= before + 3, (before, after)
    assert model.calls == 6

    _portal.run(flush())  # the sync calls' counters, buffered on the background loop
    stats = admin.hgetall("pyai_caching:stats:sync")
    assert (float(stats[b"misses"]), float(stats[b"hits"])) == (6.0, 25.0)


async def test_sync_call_inside_a_running_loop(agent: Agent[None, str], model: CountingModel, redis_url: str) -> None:
    first = cached_agent_run_sync(agent, "q", "inside", redis_url=redis_url, custom_costs=COSTS)
    second = cached_agent_run_sync(agent, "q", "inside", redis_url=redis_url, custom_costs=COSTS)
    third = await cached_run(agent, "q", "inside", redis_url=redis_url, custom_costs=COSTS)  # this loop's client
    assert (first.cached, second.cached, third.cached) == (False, True, True)
    assert model.calls == 1
    assert third.output == "answer to q"
    _portal.run(flush())  # leave nothing buffered for interpreter exit (the server is gone by then)


def test_asyncio_run_twice_leaks_nothing(agent: Agent[None, str], model: CountingModel, admin: redis.Redis, redis_url: str) -> None:
    baseline = client_count(admin)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = []
        for _ in range(2):
            results.append(asyncio.run(cached_run(agent, "q", "runs", redis_url=redis_url, custom_costs=COSTS)))
            gc.collect()
            assert wait_for_client_count(admin, baseline) == baseline  # the loop's connections were closed
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == [], [str(w.message) for w in leaks]
    assert [r.cached for r in results] == [False, True]
    assert model.calls == 1
    stats = admin.hgetall("pyai_caching:stats:runs")  # buffered counters were written when each loop closed
    assert (float(stats[b"misses"]), float(stats[b"hits"])) == (1.0, 1.0)


def test_closing_your_own_store_leaks_nothing(agent: Agent[None, str], admin: redis.Redis, redis_url: str) -> None:
    """A caller closes its store before its loop ends, while counters are still buffered."""
    baseline = client_count(admin)

    async def main() -> None:
        store = RedisStore.from_url(redis_url)
        await cached_run(agent, "q", "own", store=store, custom_costs=COSTS)
        await store.aclose()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
        assert wait_for_client_count(admin, baseline) == baseline
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == [], [str(w.message) for w in leaks]


async def test_closed_store_refuses_instead_of_reconnecting(admin: redis.Redis, redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    await store.set("pyai_caching:v1:t:k", b"v", 60)
    await store.aclose()
    with pytest.raises(CacheError, match="closed"):
        await store.get("pyai_caching:v1:t:k")
    with pytest.raises(CacheError, match="closed"):
        await store.add_counters("pyai_caching:stats:t", {"hits": 1})
    assert admin.get("pyai_caching:v1:t:k") == b"v"


def test_a_store_per_call_is_not_retained(agent: Agent[None, str]) -> None:
    refs = []
    for _ in range(5):
        store = MemoryStore()
        refs.append(weakref.ref(store))
        cached_agent_run_sync(agent, "q", "retained", store=store, custom_costs=COSTS)
        del store
    time.sleep(0.7)  # pending counters keep a store alive until they are written (~0.5 s)
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 0


def test_counters_are_kept_when_the_caller_closes_its_store(agent: Agent[None, str], admin: redis.Redis, redis_url: str) -> None:
    async def main() -> None:
        store = RedisStore.from_url(redis_url)
        await cached_run(agent, "q", "closed", store=store, custom_costs=COSTS)
        await cached_run(agent, "q", "closed", store=store, custom_costs=COSTS)
        await store.aclose()

    asyncio.run(main())
    stats = admin.hgetall("pyai_caching:stats:closed")
    assert (float(stats.get(b"misses", 0)), float(stats.get(b"hits", 0))) == (1.0, 1.0)
