"""`@llm_cache`: any function calling an LLM, in its four kinds (sync, async, generator, async generator), keyed on
the function and its arguments, values stored as JSON through the return annotation, chunks replayed in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from pyai_caching import CacheMissError, ConfigurationError, LocalStore, MemoryStore, get_stats, llm_cache


class Calls:
    """What the decorated functions were called with: an object the key leaves alone (a list would be keyed as
    the plain data it is, and change the key on every call)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def append(self, value: Any) -> None:
        self.seen.append(value)

    def __len__(self) -> int:
        return len(self.seen)

    def __eq__(self, other: object) -> bool:
        return self.seen == other

    __hash__ = None  # type: ignore[assignment]


class Summary(BaseModel):
    title: str
    words: int


async def test_an_async_function_returning_a_pydantic_model() -> None:
    store, calls = MemoryStore(), Calls()

    @llm_cache("summaries", store=store)
    async def summarize(text: str, *, style: str = "short") -> Summary:
        calls.append(text)
        return Summary(title=text.upper(), words=len(text.split()))

    first = await summarize("the quick brown fox")
    again = await summarize("the quick brown fox")
    other = await summarize("the quick brown fox", style="long")
    assert first == again == Summary(title="THE QUICK BROWN FOX", words=4) and isinstance(again, Summary)
    assert again is not first  # the caller's own object
    assert calls == ["the quick brown fox", "the quick brown fox"]  # style changes the key
    assert other == first
    stats = (await get_stats("summaries", store=store)).tasks["summaries"]
    assert (stats.hits, stats.misses) == (1, 2)


def test_a_sync_function_in_a_script(tmp_path: Path) -> None:
    calls = Calls()

    @llm_cache("sums", store=LocalStore(tmp_path / "cache"))
    def add(a: int, b: int) -> int:
        calls.append(1)
        return a + b

    assert [add(1, 2), add(1, 2), add(b=2, a=1), add(2, 1)] == [3, 3, 3, 3]
    assert len(calls) == 2  # add(b=2, a=1) is the same call as add(1, 2)


def test_a_generator_replays_its_chunks_in_order() -> None:
    store, calls = MemoryStore(), Calls()

    @llm_cache("stream", store=store)
    def stream(prompt: str) -> Iterator[str]:
        calls.append(prompt)
        yield from ["Hel", "lo", ", ", prompt, "!"]

    live = list(stream("Ada"))
    replayed = list(stream("Ada"))
    assert live == replayed == ["Hel", "lo", ", ", "Ada", "!"] and calls == ["Ada"]


async def test_an_async_generator_is_stored_only_when_it_finished() -> None:
    store, calls = MemoryStore(), Calls()

    @llm_cache("astream", store=store)
    async def stream(prompt: str) -> AsyncIterator[str]:
        calls.append(prompt)
        for token in ("a", "b", "c"):
            await asyncio.sleep(0)
            yield token

    partial = stream("x")
    assert await partial.__anext__() == "a"
    await partial.aclose()  # the caller stopped after one chunk: nothing is stored
    assert [t async for t in stream("x")] == ["a", "b", "c"]
    assert [t async for t in stream("x")] == ["a", "b", "c"]
    assert calls == ["x", "x"]


async def test_arguments_with_no_json_form_need_key() -> None:
    class Client:
        pass

    @llm_cache("clients", store=MemoryStore())
    async def ask(client: Client, question: str) -> str:
        return question

    with pytest.raises(TypeError, match="pass key= to @llm_cache"):
        await ask(Client(), "q")

    calls = Calls()

    @llm_cache("clients", store=MemoryStore(), key=lambda client, question: {"question": question})
    async def ask_keyed(client: Client, question: str) -> str:
        calls.append(question)
        return question.upper()

    assert [await ask_keyed(Client(), "q"), await ask_keyed(Client(), "q")] == ["Q", "Q"] and calls == ["q"]


async def test_modes_and_bad_configuration() -> None:
    store, calls = MemoryStore(), Calls()

    @llm_cache("modes", store=store)
    async def answer(q: str) -> str:
        calls.append(q)
        return f"answer {len(calls)}"

    @llm_cache("modes", store=store, mode="replay")
    async def replay_answer(q: str) -> str:
        calls.append(q)
        return "never"

    await answer("recorded")
    with pytest.raises(CacheMissError, match="no recorded answer"):
        await replay_answer("unrecorded")
    with pytest.raises(ConfigurationError):
        llm_cache("modes", mode="record")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="task_name"):
        llm_cache("two words")
    with pytest.raises(TypeError, match="store must be a pyai_caching Store"):
        llm_cache("modes", store="redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be a function"):
        llm_cache("modes", key="question")  # type: ignore[arg-type]
    assert calls == ["recorded"]


async def test_the_function_body_is_part_of_the_key() -> None:
    store = MemoryStore()

    @llm_cache("versions", store=store)
    async def prompt_v1(q: str) -> str:
        return "v1"

    @llm_cache("versions", store=store)
    async def prompt_v2(q: str) -> str:
        return "v2"

    assert [await prompt_v1("q"), await prompt_v2("q")] == ["v1", "v2"]




async def test_plain_data_the_function_closes_over_is_part_of_the_key() -> None:
    store = MemoryStore()

    def make(settings: dict[str, str]) -> Any:
        @llm_cache("factories", store=store)
        async def ask(q: str) -> str:
            return f"{settings['language']}: {q}"

        return ask

    assert [await make({"language": "German"})("hi"), await make({"language": "French"})("hi")] == [
        "German: hi",
        "French: hi",
    ]


async def test_calls_tell_the_pytest_plugin_which_recordings_they_used() -> None:
    from pyai_caching._scope import scoped

    recordings = MemoryStore()

    @llm_cache("scoped")
    async def ask(question: str) -> str:
        return question.upper()

    @llm_cache("scoped-chunks")
    async def chunks(question: str) -> AsyncIterator[str]:
        yield question

    with scoped(recordings, "read_write") as first:
        await ask("a")
        [c async for c in chunks("a")]
    with scoped(recordings, "replay") as second:
        await ask("a")
        [c async for c in chunks("a")]
        with pytest.raises(CacheMissError):
            await ask("b")
    assert len(first.recorded) == 2 and second.replayed == first.recorded and len(second.missing) == 1
