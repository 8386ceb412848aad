"""Recordings in the repository: `FixtureStore` files review as clean diffs, replays change nothing, nothing
secret is written, unused recordings are found, and `copy_entries` moves entries between any two stores."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import (
    CacheDriftError,
    FixtureStore,
    MemoryStore,
    RedisStore,
    cached_agent_run,
    copy_entries,
    copy_entries_sync,
)

from openai_server import FakeOpenAIServer, openai_model, text_reply


class City(BaseModel):
    name: str
    population: int


def city_agent(answers: list[dict[str, Any]]) -> Agent[None, City]:
    """Answers each request with the next of `answers` (the last one repeats)."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        args = answers.pop(0) if len(answers) > 1 else answers[0]
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, args)])

    return Agent(FunctionModel(respond, model_name="gpt-4o-mini"), output_type=City)


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under `root`: its bytes, modification time and mode."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


async def test_one_pretty_deterministic_file_per_entry_grouped_per_task(tmp_path: Path) -> None:
    store = FixtureStore(tmp_path / "llm")
    result = await cached_agent_run(city_agent([{"name": "Lyon", "population": 522000}]), "Lyon?", "cities", store=store)
    [path] = [p for p in (tmp_path / "llm").rglob("*.json")]
    assert path == store.path_for(result.cache_key)
    assert path.relative_to(tmp_path / "llm").parts[:3] == ("pyai_caching", "v2", "cities")
    text = path.read_text()
    document = json.loads(text)
    assert text == json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    assert list(document) == ["key", "entry"] and document["key"] == result.cache_key
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert len(text.splitlines()) > 20  # one value per line: reviewable


async def test_recording_an_unchanged_answer_again_rewrites_nothing(tmp_path: Path) -> None:
    root = tmp_path / "llm"
    agent = city_agent([{"name": "Lyon", "population": 522000}])
    await cached_agent_run(agent, "Lyon?", "cities", store=FixtureStore(root))
    before = snapshot(root)
    refreshed = await cached_agent_run(agent, "Lyon?", "cities", store=FixtureStore(root), mode="refresh")
    assert not refreshed.cached  # the model was asked again, with new timestamps and run ids
    assert snapshot(root) == before


async def test_a_changed_answer_shows_as_a_small_readable_diff(tmp_path: Path) -> None:
    root = tmp_path / "llm"
    store = FixtureStore(root)
    answers = [{"name": "Lyon", "population": 522000}, {"name": "Lyon", "population": 523000}]
    agent = city_agent(answers)
    first = await cached_agent_run(agent, "Lyon?", "cities", store=store)
    old = store.path_for(first.cache_key).read_text().splitlines()
    await cached_agent_run(agent, "Lyon?", "cities", store=store, mode="refresh")
    new = store.path_for(first.cache_key).read_text().splitlines()
    changed = [(a, b) for a, b in zip(old, new) if a != b]
    assert len(old) == len(new)
    assert any("522000" in a and "523000" in b for a, b in changed)
    # besides the answer, only when it was made and the ids of that run changed
    allowed = ("522000", "timestamp", "run_id", "conversation_id", "created", "latency", "tool_call_id")
    assert all(any(word in a for word in allowed) for a, _ in changed), changed


def _git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True).stdout


async def test_git_status_is_clean_after_a_replay_run(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    root = repo / "tests" / "llm_cache"
    agent = city_agent([{"name": "Lyon", "population": 522000}])
    for prompt in ("Lyon?", "Paris?"):
        await cached_agent_run(agent, prompt, "cities", store=FixtureStore(root))
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "recordings")
    before = snapshot(root)
    store = FixtureStore(root)
    for prompt in ("Lyon?", "Paris?", "Lyon?"):
        assert (await cached_agent_run(agent, prompt, "cities", store=store, mode="replay")).cached
    assert _git(repo, "status", "--porcelain", "--ignored") == ""
    assert snapshot(root) == before


async def test_no_api_key_or_header_reaches_a_fixture(tmp_path: Path, openai_server: FakeOpenAIServer) -> None:
    secret = "sk-proj-DO-NOT-COMMIT-7f3a9c"
    openai_server.script(text_reply("Bonjour", usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}))
    agent = Agent(openai_model(openai_server, api_key=secret))
    store = FixtureStore(tmp_path / "llm")
    await cached_agent_run(agent, "Say hello in French", "greet", store=store)
    assert openai_server.requests[-1].headers["authorization"] == f"Bearer {secret}"  # it was sent
    files = list((tmp_path / "llm").rglob("*"))
    blob = b"".join(p.read_bytes() for p in files if p.is_file())
    assert b"Bonjour" in blob
    for forbidden in (secret.encode(), b"DO-NOT-COMMIT", b"Bearer", b"authorization", b"Authorization"):
        assert forbidden not in blob


async def test_a_hand_broken_fixture_fails_replay_saying_why(tmp_path: Path) -> None:
    store = FixtureStore(tmp_path / "llm")
    agent = city_agent([{"name": "Lyon", "population": 522000}])
    key = (await cached_agent_run(agent, "Lyon?", "cities", store=store)).cache_key
    path = store.path_for(key)
    path.write_text("<<<<<<< HEAD\n" + path.read_text())  # a merge conflict left in
    with pytest.raises(CacheDriftError, match="cannot be replayed: entry does not validate"):
        await cached_agent_run(agent, "Lyon?", "cities", store=store, mode="replay")
    healed = await cached_agent_run(agent, "Lyon?", "cities", store=store)  # read_write: recorded again
    assert not healed.cached and json.loads(path.read_text())["key"] == key


# -- copy_entries


@pytest.mark.redis_server
async def test_copy_entries_round_trips_between_redis_and_a_fixture_directory(redis_url: str, tmp_path: Path) -> None:
    calls: list[str] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append("x")
        return ModelResponse(parts=[TextPart(f"answer {len(calls)}")])

    agent = Agent(FunctionModel(respond, model_name="gpt-4o-mini"))
    production = RedisStore.from_url(redis_url)
    warm = RedisStore.from_url(redis_url.rsplit("/", 1)[0] + "/1")
    try:
        for task, prompt in (("faq", "a"), ("faq", "b"), ("chat", "c")):
            await cached_agent_run(agent, prompt, task, store=production)
        await production.add_counters("pyai_caching:stats:faq", {"hits": 1})
        fixtures = FixtureStore(tmp_path / "llm")
        assert await copy_entries(production, fixtures, task_name="faq") == 2
        assert await copy_entries(production, fixtures) == 3  # the whole namespace
        assert len(await fixtures.keys("")) == 3  # copied, not duplicated; counters not copied
        replayed = [(await cached_agent_run(agent, p, t, store=fixtures, mode="replay")).output for t, p in (("faq", "a"), ("chat", "c"))]
        assert replayed == ["answer 1", "answer 3"] and len(calls) == 3
        assert await copy_entries(fixtures, warm) == 3
        hit = await cached_agent_run(agent, "b", "faq", store=warm, mode="replay")
        assert hit.output == "answer 2" and len(calls) == 3
        assert await warm.get_counters("") == {}
    finally:
        await production.aclose()
        await warm.aclose()


def test_copy_entries_sync_and_bad_arguments(tmp_path: Path) -> None:
    source, target = MemoryStore(), FixtureStore(tmp_path / "llm")
    agent = city_agent([{"name": "Lyon", "population": 522000}])
    from pyai_caching import cached_agent_run_sync

    cached_agent_run_sync(agent, "Lyon?", "cities", store=source)
    assert copy_entries_sync(source, target) == 1
    assert copy_entries_sync(source, target, namespace="other") == 0
    with pytest.raises(TypeError, match="target must be a pyai_caching Store"):
        copy_entries_sync(source, str(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same store"):
        copy_entries_sync(source, source)
    with pytest.raises(ValueError, match="task_name"):
        copy_entries_sync(source, target, task_name="bad name")


async def test_an_answer_whose_own_fields_are_named_like_ids_is_rewritten_when_it_changes(tmp_path: Path) -> None:
    class Event(BaseModel):
        timestamp: str
        run_id: str

    answers = [{"timestamp": "2024-01-01", "run_id": "r1"}, {"timestamp": "2025-06-30", "run_id": "r2"}]

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, answers.pop(0))])

    agent = Agent(FunctionModel(respond, model_name="m"), output_type=Event)
    store = FixtureStore(tmp_path / "llm")
    await cached_agent_run(agent, "when?", "events", store=store)
    refreshed = await cached_agent_run(agent, "when?", "events", store=store, mode="refresh")
    replayed = await cached_agent_run(agent, "when?", "events", store=store, mode="replay")
    assert refreshed.output.timestamp == replayed.output.timestamp == "2025-06-30"


async def test_a_replay_keeps_the_order_of_a_dict_output(tmp_path: Path) -> None:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"response": {"zeta": 1, "alpha": 2, "mid": 3}})])

    agent = Agent(FunctionModel(respond, model_name="m"), output_type=dict[str, int])
    live = await cached_agent_run(agent, "scores", "t", store=FixtureStore(tmp_path / "llm"))
    replayed = await cached_agent_run(agent, "scores", "t", store=FixtureStore(tmp_path / "llm"), mode="replay")
    assert list(live.output) == list(replayed.output) == ["zeta", "alpha", "mid"]


async def test_a_file_holding_another_key_is_not_served(tmp_path: Path) -> None:
    store = FixtureStore(tmp_path / "llm")
    await store.set("ns:v2:Support:abc", b'{"answer": 1}', None)
    path = store.path_for("ns:v2:Support:abc")
    other = store.path_for("ns:v2:support:abc")  # the same file on a case-insensitive file system
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_bytes(path.read_bytes())
    assert await store.get("ns:v2:support:abc") is None
    assert await store.get("ns:v2:Support:abc") == b'{"answer":1}'
    assert await store.keys("") == ["ns:v2:Support:abc"]  # the copy is not where its key puts it


async def test_keys_lists_long_task_names_and_not_a_nested_recordings_directory(tmp_path: Path) -> None:
    outer, inner = FixtureStore(tmp_path / "llm" / "test_api"), FixtureStore(tmp_path / "llm" / "test_api" / "test_more")
    long_task = "t" * 300
    await outer.set(f"ns:v2:{long_task}:abc", b'{"a": 1}', None)
    await outer.set("ns:v2:short:abc", b'{"a": 2}', None)
    await inner.set("ns:v2:short:def", b'{"a": 3}', None)
    assert await outer.keys("") == ["ns:v2:short:abc", f"ns:v2:{long_task}:abc"]
    assert await inner.keys("") == ["ns:v2:short:def"]


@pytest.mark.parametrize("part", ["con", "NUL", "aux.v1", "com1", "lpt9.txt", "summary."])
async def test_file_names_are_safe_on_windows(tmp_path: Path, part: str) -> None:
    store = FixtureStore(tmp_path / "llm")
    key = f"ns:v2:{part}:abc"
    await store.set(key, b'{"a": 1}', None)
    path = store.path_for(key)
    name = path.parent.name
    assert name.split(".")[0].upper() not in {"CON", "NUL", "AUX", "COM1", "LPT9"} and not name.endswith(".")
    assert await store.get(key) == b'{"a":1}' and await store.keys("") == [key]
