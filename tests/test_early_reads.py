"""The Redis read sent while the key is worked out (`Store.start_get`), against the real redis-server.

A hit's GET is sent with the key the agent had on its last call, before the key is derived in full; the answer
is used only when the derived key is that key. These tests pin what must hold whatever the guess: every answer is
the one for the call's own configuration, and no connection ever carries an unread answer to the next command.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import RedisStore, cached_agent_run
from pyai_caching._keys import (
    agent_json,
    digest_of,
    digest_of_parts,
    request_material,
    rest_json,
)

pytestmark = pytest.mark.redis_server


def _answering(style: str, calls: list[str], delay: float = 0.0) -> FunctionModel:
    """A model answering `<style>:<last prompt>` after `delay` seconds, recording each prompt it is asked."""

    async def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        prompt = str(messages[-1].parts[-1].content)  # type: ignore[union-attr]
        calls.append(prompt)
        await asyncio.sleep(delay)
        return ModelResponse(parts=[TextPart(f"{style}:{prompt}")])

    return FunctionModel(answer, model_name=f"m-{style}")


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    backend = RedisStore.from_url(redis_url)
    try:
        yield backend
    finally:
        await backend.aclose()


def _gets(redis_url: str) -> int:
    with redis.Redis.from_url(redis_url) as client:
        return int(client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


class _Starts:
    """Counts the reads a store sends early."""

    def __init__(self, store: RedisStore) -> None:
        self.count = 0
        original = store.start_get

        async def start_get(key: str) -> Any:
            self.count += 1
            return await original(key)

        store.start_get = start_get  # type: ignore[method-assign]


async def test_a_hit_reads_its_entry_once_with_the_read_sent_before_the_key_is_derived(
    store: RedisStore, redis_url: str
) -> None:
    calls: list[str] = []
    agent = Agent(_answering("a", calls))
    for prompt in ("p1", "p2", "p3"):
        await cached_agent_run(agent, prompt, "t", store=store)
    starts = _Starts(store)
    before = _gets(redis_url)
    results = [await cached_agent_run(agent, prompt, "t", store=store) for prompt in ("p1", "p2", "p3") * 3]
    assert [r.output for r in results] == ["a:p1", "a:p2", "a:p3"] * 3
    assert all(r.cached for r in results) and calls == ["p1", "p2", "p3"]
    assert starts.count == 9  # every hit sent its read early...
    assert _gets(redis_url) - before == 9  # ...and used it: one GET per hit


async def test_an_agent_changed_in_place_is_answered_for_its_new_configuration(
    store: RedisStore, redis_url: str
) -> None:
    """The guess (the agent as it was) is wrong after the agent changes: that read is dropped, never answered with."""
    calls: list[str] = []
    agent = Agent(_answering("a", calls), instructions="be brief")
    assert (await cached_agent_run(agent, "q", "t", store=store)).output == "a:q"
    assert (await cached_agent_run(agent, "q", "t", store=store)).cached
    agent.model = _answering("b", calls)  # same prompt, another model: the remembered key is now wrong
    before = _gets(redis_url)
    changed = await cached_agent_run(agent, "q", "t", store=store)
    assert (changed.output, changed.cached) == ("b:q", False)
    assert _gets(redis_url) - before >= 2  # the guessed read (dropped) and the real one
    agent.instructions("be verbose")  # a dynamic instruction added in place
    added = await cached_agent_run(agent, "q", "t", store=store)
    assert (added.output, added.cached) == ("b:q", False) and calls == ["q", "q", "q"]
    again = await cached_agent_run(agent, "q", "t", store=store)
    assert (again.output, again.cached) == ("b:q", True)


async def test_wrong_guesses_never_leave_an_answer_on_a_connection(store: RedisStore) -> None:
    """Alternating two configurations of one agent makes every guess wrong: each dropped read is drained before
    its connection is reused, so every later command reads its own answer."""
    calls: list[str] = []
    models = {"a": _answering("a", calls), "b": _answering("b", calls)}
    agent = Agent(models["a"])
    for round_ in range(3):
        for style in ("a", "b"):
            agent.model = models[style]
            for prompt in ("x", "y"):
                result = await cached_agent_run(agent, prompt, "t", store=store)
                assert result.output == f"{style}:{prompt}"
                assert result.cached == (round_ > 0)
    assert sorted(calls) == ["x", "x", "y", "y"]
    assert await store.get("absent") is None  # the pool's connections are in step


async def test_a_run_that_turns_unkeyable_after_its_read_was_sent_drops_the_read(
    store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    agent = Agent(_answering("a", calls))
    await cached_agent_run(agent, "q", "t", store=store)
    opaque = object()

    @agent.instructions
    def with_opaque() -> str:  # closes over an object with no data form: the run cannot be keyed
        return str(type(opaque))

    starts = _Starts(store)
    with caplog.at_level("WARNING", logger="pyai_caching"):
        uncached = await cached_agent_run(agent, "q", "t", store=store)
    assert "cannot be cached" in caplog.text and starts.count == 1  # its read was sent, then dropped
    assert (uncached.output, uncached.cached) == ("a:q", False) and len(calls) == 2
    assert await store.get("absent") is None  # the connection that read was sent on is in step


async def test_concurrent_callers_of_a_key_in_flight_drop_their_reads_and_share_the_answer(store: RedisStore) -> None:
    calls: list[str] = []
    agent = Agent(_answering("slow", calls, delay=0.2))
    await cached_agent_run(agent, "warm", "t", store=store)  # the agent's key material is remembered
    results = await asyncio.gather(*(cached_agent_run(agent, "q", "t", store=store) for _ in range(5)))
    assert [r.output for r in results] == ["slow:q"] * 5 and calls == ["warm", "q"]
    assert sum(r.cached for r in results) == 4
    assert (await cached_agent_run(agent, "warm", "t", store=store)).output == "slow:warm"


async def test_an_unreachable_redis_fails_the_early_read_as_the_call_s_one_read(redis_url: str) -> None:
    """The early read failing is the call's read failing: no second read is tried, the model answers."""
    calls: list[str] = []
    agent = Agent(_answering("a", calls))
    reachable = RedisStore.from_url(redis_url)
    await cached_agent_run(agent, "q", "t", store=reachable)  # the agent's key material is remembered
    await reachable.aclose()
    dead = RedisStore.from_url(f"redis://127.0.0.1:{_closed_port()}/0")
    starts = _Starts(dead)
    gets = 0
    original_get = dead.get

    async def get(key: str) -> bytes | None:
        nonlocal gets
        gets += 1
        return await original_get(key)

    dead.get = get  # type: ignore[method-assign]
    result = await cached_agent_run(agent, "q", "t", store=dead)
    assert (result.output, result.cached) == ("a:q", False) and calls == ["q", "q"]
    assert (starts.count, gets) == (1, 0)
    await dead.aclose()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_key_from_its_two_parts_is_the_key_of_the_whole() -> None:
    """Early reads hash the agent's part and the rest separately: the same bytes as the whole material."""
    calls: list[str] = []
    agent = Agent(_answering("a", calls), instructions="be brief")
    history = [ModelResponse(parts=[TextPart("earlier")])]
    for prompt, past, extra in (("q", [], None), ("naïve ☃", history, {"tenant": 1, 2: (3,)}), ("", history, [1.5])):
        material = request_material(agent, prompt, past, {}, extra)
        assert digest_of_parts(agent_json(material), rest_json(material)) == digest_of(material)


def _pause(redis_url: str, milliseconds: int) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.execute_command("CLIENT", "PAUSE", milliseconds, "ALL")


async def test_a_stall_while_early_reads_connect_costs_no_hit(store: RedisStore, redis_url: str) -> None:
    """An early read that cannot get its connection in time is the read's first attempt: it is retried once, as
    every read is, so a stall shorter than two timeouts neither turns hits into model calls nor switches the cache
    off."""
    calls: list[str] = []
    agent = Agent(_answering("a", calls))
    prompts = [f"q{i}" for i in range(8)]
    for prompt in prompts:  # stored, one connection in the pool; the agent's key material remembered
        await cached_agent_run(agent, prompt, "t", store=store)
    _pause(redis_url, 400)  # longer than one timeout (0.25 s), shorter than two
    burst = await asyncio.gather(*(cached_agent_run(agent, prompt, "t", store=store) for prompt in prompts))
    assert [r.cached for r in burst] == [True] * 8 and len(calls) == 8
    assert (await cached_agent_run(agent, "q0", "t", store=store)).cached


async def test_a_dropped_early_read_does_not_wait_out_a_stalled_server(redis_url: str) -> None:
    """Dropping a read whose answer does not come at once closes its connection instead of waiting for it, even
    with a long timeout (and the connection goes back to the pool, closed: nothing unread can reach the next
    command)."""
    store = RedisStore.from_url(redis_url, timeout=5.0)
    await store.set("k", b"v", None)
    _pause(redis_url, 1500)
    pending = await store.start_get("k")
    assert pending is not None
    connection = pending.connection  # type: ignore[attr-defined]
    await pending.discard()
    pool = store.client.connection_pool
    assert not connection.is_connected and connection not in pool._in_use_connections  # pyright: ignore
    with redis.Redis.from_url(redis_url) as client:
        client.execute_command("CLIENT", "UNPAUSE")
    assert await store.get("k") == b"v"
    await store.aclose()


async def test_a_store_that_reads_its_own_way_is_read_with_its_own_get(redis_url: str) -> None:
    """A `RedisStore` subclass with its own `get` (decompressing, decrypting) is never read around it."""

    class Prefixed(RedisStore):
        async def get(self, key: str) -> bytes | None:
            data = await super().get(key)
            return None if data is None else data.removeprefix(b"z:")

        async def set(self, key: str, value: bytes, ttl: float | None) -> None:
            await super().set(key, b"z:" + value, ttl)

    store = Prefixed.from_url(redis_url, claims=False)
    calls: list[str] = []
    agent = Agent(_answering("a", calls))
    results = [await cached_agent_run(agent, "q", "t", store=store) for _ in range(4)]
    assert [r.cached for r in results] == [False, True, True, True] and calls == ["q"]
    assert not store.starts_gets() and await store.start_get("q") is None
    await store.aclose()


async def test_an_early_read_leaves_its_connection_s_timeout_as_it_was(redis_url: str) -> None:
    """The GET is written under a timer of the store's own (no task per write); the connection keeps its read
    timeout for the answer and for every command after it."""
    store = RedisStore.from_url(redis_url, timeout=0.75)
    await store.set("k", b"v", None)
    pending = await store.start_get("k")
    assert pending is not None
    connection = pending.connection  # type: ignore[attr-defined]
    assert connection.socket_timeout == 0.75
    assert await pending.result() == b"v"
    assert all(c.socket_timeout == 0.75 for c in store.client.connection_pool._available_connections)  # pyright: ignore
    await store.aclose()
