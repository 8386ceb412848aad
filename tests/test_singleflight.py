"""Single-flight across processes: concurrent identical misses in several processes make one model call per key
(Redis claims woken by pub/sub; file locks for the local store), a dead holder is taken over, and claim errors
fail open."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import CacheError, LocalStore, MemoryStore, cached_agent_run

SCENARIO = Path(__file__).parent / "singleflight_scenario.py"


def start(store: str, calls: Path, start_at: float, prompts: int, callers: int, delay: float, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCENARIO), store, str(calls), str(start_at), str(prompts), str(callers), str(delay), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stampede(store: str, tmp_path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """4 processes x 25 concurrent callers on 10 prompts, with a model taking 1 s."""
    calls = tmp_path / "calls.txt"
    start_at = time.time() + 4  # after every interpreter has imported PydanticAI
    processes = [start(store, calls, start_at, 10, 25, 1.0) for _ in range(4)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return calls.read_text().splitlines(), results


@pytest.mark.redis_server
def test_four_processes_on_redis_make_one_model_call_per_prompt(redis_url: str, tmp_path: Path) -> None:
    calls, results = stampede(redis_url, tmp_path)
    assert sorted(line.split(" ", 1)[1] for line in calls) == sorted(f"prompt {i}" for i in range(10))
    for result in results:
        assert result["outputs"] == [f"answer to prompt {i % 10}" for i in range(25)]
    assert sum(r["cached"] for r in results) == 100 - 10


def test_four_processes_on_a_local_store_make_one_model_call_per_prompt(tmp_path: Path) -> None:
    calls, results = stampede(str(tmp_path / "cache"), tmp_path)
    assert sorted(line.split(" ", 1)[1] for line in calls) == sorted(f"prompt {i}" for i in range(10))
    assert sum(r["cached"] for r in results) == 100 - 10


@pytest.mark.redis_server
@pytest.mark.parametrize("backend", ["redis", "local"])
def test_a_holder_that_dies_is_taken_over(backend: str, redis_url: str, tmp_path: Path) -> None:
    store = redis_url if backend == "redis" else str(tmp_path / "cache")
    calls = tmp_path / "calls.txt"
    holder = start(store, calls, time.time(), 1, 1, 30.0, "1.0")  # its model takes 30 s; its claim lives 1 s
    deadline = time.monotonic() + 30
    while not (calls.exists() and calls.read_text()):
        assert time.monotonic() < deadline and holder.poll() is None, holder.communicate()[1] if holder.poll() is not None else ""
        time.sleep(0.05)
    waiter = start(store, calls, time.time(), 1, 1, 0.1, "1.0")
    time.sleep(1.0)  # the waiter is waiting for the holder's claim
    assert waiter.poll() is None and len(calls.read_text().splitlines()) == 1
    holder.send_signal(signal.SIGKILL)
    holder.communicate()
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["outputs"] == ["answer to prompt 0"]
    assert len(calls.read_text().splitlines()) == 2  # the dead holder's call, and the waiter's own


def test_a_holder_that_fails_wakes_its_waiter_which_makes_the_entry(tmp_path: Path) -> None:
    """Two event loops in two threads (as two processes would): separate in-process flights, one shared directory."""
    root = tmp_path / "cache"
    calls: list[str] = []
    started = threading.Event()

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append(threading.current_thread().name)
        if threading.current_thread().name == "holder":
            started.set()
            await asyncio.sleep(0.3)
            raise RuntimeError("the provider broke")
        return ModelResponse(parts=[TextPart("made by the waiter")])

    agent = Agent(FunctionModel(respond, model_name="m"))
    outcome: dict[str, Any] = {}

    def run(name: str) -> None:
        try:
            outcome[name] = asyncio.run(cached_agent_run(agent, "q", "t", store=LocalStore(root))).output
        except Exception as exc:  # noqa: BLE001
            outcome[name] = exc

    holder = threading.Thread(target=run, args=("holder",), name="holder")
    holder.start()
    started.wait(5)
    waiter = threading.Thread(target=run, args=("waiter",), name="waiter")
    waiter.start()
    holder.join(10)
    waiter.join(10)
    assert isinstance(outcome["holder"], RuntimeError)
    assert outcome["waiter"] == "made by the waiter"
    assert calls == ["holder", "waiter"]


async def test_claim_errors_fail_open() -> None:
    class BrokenClaims(MemoryStore):
        async def claim(self, key: str, ttl: float) -> str | None:
            raise CacheError("lock service down")

    calls: list[int] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append(1)
        return ModelResponse(parts=[TextPart("ok")])

    store = BrokenClaims()
    agent = Agent(FunctionModel(respond, model_name="m"))
    assert (await cached_agent_run(agent, "q", "t", store=store)).output == "ok"
    assert (await cached_agent_run(agent, "q", "t", store=store)).cached
    assert calls == [1]


@pytest.mark.redis_server
async def test_claims_leave_nothing_behind_and_stay_out_of_the_entries(redis_url: str) -> None:
    import redis as redis_sync

    from pyai_caching import RedisStore, copy_entries

    store = RedisStore.from_url(redis_url)
    try:
        agent = Agent(FunctionModel(lambda m, i: ModelResponse(parts=[TextPart("ok")]), model_name="m"))
        await asyncio.gather(*(cached_agent_run(agent, f"q{i % 3}", "t", store=store) for i in range(9)))
        with redis_sync.Redis.from_url(redis_url) as admin:
            assert not list(admin.scan_iter("pyai_caching:lock:*"))  # released
        assert len(await store.keys("pyai_caching:v2:")) == 3
        assert await copy_entries(store, MemoryStore()) == 3
    finally:
        await store.aclose()


@pytest.mark.redis_server
async def test_a_holder_working_past_the_claim_ttl_keeps_its_claim(redis_url: str) -> None:
    """The claim is renewed while the model works: a caller of another store (another process, as far as claims
    go) arriving after the TTL has passed waits for the holder instead of paying again."""
    from two_callers import second_caller_of_a_slow_call

    first, second, calls = await second_caller_of_a_slow_call(redis_url, delay=2.5, arrive_after=1.3, claim_ttl=0.6)
    assert first.output == second.output == "ok"
    assert second.cached and calls == [1]


async def test_a_failed_claim_on_one_key_never_leaves_another_keys_claim_held(tmp_path: Path) -> None:
    class FlakyClaims(LocalStore):
        async def claim(self, key: str, ttl: float) -> str | None:
            if "fail" in self._names.get(key, ""):
                raise CacheError("too many open files")
            return await super().claim(key, ttl)

    store = FlakyClaims(tmp_path / "cache")
    store._names = {}  # type: ignore[attr-defined]
    gate = asyncio.Event()

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if messages[-1].parts[-1].content == "slow":
            await gate.wait()
        return ModelResponse(parts=[TextPart("ok")])

    agent = Agent(FunctionModel(respond, model_name="m"))
    from pyai_caching._call import RunCall
    from pyai_caching._arguments import backoff

    def key_of(prompt: str) -> str:
        call = RunCall.prepare(None, agent, prompt, "t", mode=None, message_history=None, ttl=None, backoff=backoff(1, 30),
                               expense_recorder=None, custom_costs=None, key_extra=None, run_kwargs={})
        return call.key("pyai_caching")

    store._names = {key_of("fail"): "fail"}  # type: ignore[attr-defined]
    slow = asyncio.create_task(cached_agent_run(agent, "slow", "t", store=store))
    await asyncio.sleep(0.05)
    assert await cached_agent_run(agent, "fail", "t", store=store)  # its claim failed: made without one
    gate.set()
    await slow
    assert store._claims == {}  # the slow call's claim was released (no descriptor kept)
    assert (await cached_agent_run(agent, "slow", "t", store=store)).cached


async def test_the_same_key_on_two_stores_is_two_entries() -> None:
    calls: list[int] = []

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append(1)
        await asyncio.sleep(0.05)
        return ModelResponse(parts=[TextPart("ok")])

    agent = Agent(FunctionModel(respond, model_name="m"))
    a, b = MemoryStore(), MemoryStore()
    ra, rb = await asyncio.gather(cached_agent_run(agent, "q", "t", store=a), cached_agent_run(agent, "q", "t", store=b))
    assert (ra.cached, rb.cached, len(calls)) == (False, False, 2)
    assert len(await a.keys("")) == len(await b.keys("")) == 1


@pytest.mark.redis_server
def test_waiters_beyond_the_pub_sub_limit_poll_and_still_make_one_call(redis_url: str) -> None:
    from pyai_caching import RedisStore

    calls: list[str] = []

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append("x")
        await asyncio.sleep(0.3)
        return ModelResponse(parts=[TextPart("ok")])

    agent = Agent(FunctionModel(respond, model_name="m"))
    outputs: list[str] = []

    async def one() -> str:
        store = RedisStore.from_url(redis_url)
        store.max_subscribers = 0  # every waiter polls
        try:
            return (await cached_agent_run(agent, "q", "poll", store=store)).output
        finally:
            await store.aclose()

    threads = [threading.Thread(target=lambda: outputs.append(asyncio.run(one()))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outputs == ["ok"] * 3 and calls == ["x"]


@pytest.mark.redis_server
def test_claims_can_be_switched_off(redis_url: str) -> None:
    from pyai_caching import RedisStore

    calls: list[str] = []

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append("x")
        await asyncio.sleep(0.2)
        return ModelResponse(parts=[TextPart("ok")])

    agent = Agent(FunctionModel(respond, model_name="m"))

    async def one() -> None:
        store = RedisStore.from_url(redis_url, claims=False)
        try:
            await cached_agent_run(agent, "q", "no-claims", store=store)
        finally:
            await store.aclose()

    threads = [threading.Thread(target=lambda: asyncio.run(one())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert calls == ["x", "x"]  # each loop made its own miss


def test_a_loop_ending_during_the_write_still_writes_the_paid_answer_and_releases_its_claim(tmp_path: Path) -> None:
    class SlowWrites(LocalStore):
        async def set(self, key: str, value: bytes, ttl: float | None) -> None:
            await asyncio.sleep(0.2)  # a write still in flight when the loop ends
            await super().set(key, value, ttl)

    store = SlowWrites(tmp_path / "cache")
    agent = Agent(FunctionModel(lambda m, i: ModelResponse(parts=[TextPart("paid")]), model_name="m"))

    async def main() -> None:
        asyncio.get_running_loop().create_task(cached_agent_run(agent, "q", "t", store=store))
        await asyncio.sleep(0.05)  # the model answered; its entry is being written: main returns now

    asyncio.run(main())
    assert store._claims == {}
    assert asyncio.run(store.keys("pyai_caching:v2:t:")) != []


async def test_a_read_failing_after_a_claim_releases_the_claim(tmp_path: Path) -> None:
    class FailingReads(LocalStore):
        async def get(self, key: str) -> bytes | None:
            raise CacheError("I/O error")

    store = FailingReads(tmp_path / "cache")
    with pytest.raises(CacheError):
        await store.claim_and_read("pyai_caching:v2:t:" + "0" * 64, 15.0)
    assert store._claims == {}
