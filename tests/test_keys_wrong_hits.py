"""Regression tests: inputs that change what the model is sent (or how its answer is read) are in the key;
inputs that do not are out of it. Each pair differs in exactly one input."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import (
    AudioUrl,
    BinaryContent,
    DocumentUrl,
    ImageUrl,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UploadedFile,
    UserPromptPart,
    VideoUrl,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.toolsets import FunctionToolset

from pyai_caching import MemoryStore, cached_agent_run
from pyai_caching._keys import UnkeyableError, canonical_json, request_digest


def key(agent: Agent[Any, Any], prompt: Any = "question", *, history: Any = (), key_extra: Any = None, **run: Any) -> str:
    return request_digest(agent, prompt, list(history), run, key_extra)


def lookup(record_id: int) -> str:
    """Look a record up."""
    return str(record_id)


def toolset(instructions: str) -> FunctionToolset[Any]:
    return FunctionToolset([lookup], instructions=instructions)


# ----------------------------------------------------------------- toolset instructions


def test_toolset_instructions_on_the_agent_are_keyed() -> None:
    a = Agent(TestModel(), toolsets=[toolset("Only look up active records.")])
    b = Agent(TestModel(), toolsets=[toolset("Only look up archived records.")])
    assert key(a) != key(b)


def test_toolset_instructions_per_run_are_keyed() -> None:
    agent = Agent(TestModel())
    assert key(agent, toolsets=[toolset("Use metric units.")]) != key(agent, toolsets=[toolset("Use imperial units.")])


# ----------------------------------------------------------------- file parts

FILE_PARTS = [
    (lambda **kw: ImageUrl("https://example.com/a", **kw)),
    (lambda **kw: DocumentUrl("https://example.com/a", **kw)),
    (lambda **kw: AudioUrl("https://example.com/a", **kw)),
    (lambda **kw: VideoUrl("https://example.com/a", **kw)),
    (lambda **kw: BinaryContent(b"\x89PNG....", **{"media_type": "image/png", **kw})),
    (lambda **kw: UploadedFile("file-123", "openai", **kw)),
]


@pytest.mark.parametrize("make", FILE_PARTS, ids=["image", "document", "audio", "video", "binary", "uploaded"])
def test_file_part_media_type_and_identifier_are_keyed(make: Any) -> None:
    agent = Agent(TestModel())
    base = key(agent, ["look", make(media_type="image/png")])
    assert base != key(agent, ["look", make(media_type="image/jpeg")])
    assert key(agent, ["look", make(identifier="first")]) != key(agent, ["look", make(identifier="second")])
    assert base == key(agent, ["look", make(media_type="image/png")])


# ----------------------------------------------------------------- model identity


def openai_chat(base_url: str, api_key: str = "sk-one", name: str = "llama-3-8b") -> OpenAIChatModel:
    return OpenAIChatModel(name, provider=OpenAIProvider(base_url=base_url, api_key=api_key))


def test_same_model_name_on_another_endpoint_is_another_key() -> None:
    vllm = Agent(openai_chat("http://vllm.internal:8000/v1"))
    ollama = Agent(openai_chat("http://localhost:11434/v1"))
    assert key(vllm) != key(ollama)


def test_chat_and_responses_api_are_different_keys() -> None:
    provider = OpenAIProvider(base_url="http://proxy/v1", api_key="sk-one")
    chat = Agent(OpenAIChatModel("gpt-4o", provider=provider))
    responses = Agent(OpenAIResponsesModel("gpt-4o", provider=provider))
    assert key(chat) != key(responses)


def test_the_api_key_is_never_key_material() -> None:
    secret = "sk-live-DO-NOT-STORE-1234"
    one = Agent(openai_chat("http://proxy/v1", api_key=secret))
    other = Agent(openai_chat("http://proxy/v1", api_key="sk-another"))
    assert key(one) == key(other)
    material = canonical_json({"model": one.model, "toolsets": list(one.toolsets)})
    assert secret.encode() not in material


def test_function_models_with_different_functions_are_different_keys() -> None:
    def polite(messages: Any, info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("Certainly!")])

    def rude(messages: Any, info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("No.")])

    assert key(Agent(FunctionModel(polite))) != key(Agent(FunctionModel(rude)))


def test_test_models_with_different_scripted_output_are_different_keys() -> None:
    assert key(Agent(TestModel(custom_output_text="yes"))) != key(Agent(TestModel(custom_output_text="no")))
    assert key(Agent(TestModel(custom_output_text="yes"))) == key(Agent(TestModel(custom_output_text="yes")))


class _Proxy:
    """A transparent proxy (`wrapt.ObjectProxy`, werkzeug's `LocalProxy`): says it is what it wraps."""

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # noqa: D105
        return type(self._target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


async def test_models_behind_a_proxy_are_keyed_by_what_they_wrap() -> None:
    """PydanticAI takes a proxy of a model for the model (`isinstance` sees through it); so must the key."""
    agent = Agent(TestModel())
    yes, no = _Proxy(TestModel(custom_output_text="yes")), _Proxy(TestModel(custom_output_text="no"))
    assert key(agent, model=yes) != key(agent, model=no)
    assert key(Agent(yes)) != key(Agent(no))
    assert key(Agent(yes)) == key(Agent(TestModel(custom_output_text="yes")))  # keyed as the model itself
    store = MemoryStore()
    first = await cached_agent_run(agent, "q", "t", store=store, model=yes)
    second = await cached_agent_run(agent, "q", "t", store=store, model=no)
    assert (first.output, second.output, second.cached) == ("yes", "no", False)


def test_data_behind_a_proxy_is_keyed_as_the_data() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9)
    assert canonical_json({"at": _Proxy(when)}) == canonical_json({"at": when})


async def test_a_test_models_last_request_is_not_key_material() -> None:
    agent = Agent(TestModel())
    before = key(agent)
    await agent.run("question")  # sets TestModel.last_model_request_parameters
    assert key(agent) == before


def test_model_profile_given_by_hand_is_keyed() -> None:
    from pydantic_ai.profiles import ModelProfile

    plain = Agent(OpenAIChatModel("m", provider=OpenAIProvider(base_url="http://x/v1", api_key="k")))
    custom = Agent(
        OpenAIChatModel(
            "m",
            provider=OpenAIProvider(base_url="http://x/v1", api_key="k"),
            profile=ModelProfile(supports_json_schema_output=True),
        )
    )
    assert key(plain) != key(custom)


# ----------------------------------------------------------------- validation context


class Price(BaseModel):
    cents: int


def test_validation_context_is_keyed() -> None:
    usd = Agent(TestModel(), output_type=Price, validation_context={"currency": "USD"})
    eur = Agent(TestModel(), output_type=Price, validation_context={"currency": "EUR"})
    assert key(usd) != key(eur)


# ----------------------------------------------------------------- functions that close over data


def make_prompt(language: str) -> Any:
    def prompt() -> str:
        return f"Answer in {language}."

    return prompt


def test_factory_closures_over_different_values_are_different_keys() -> None:
    german = Agent(TestModel(), instructions=make_prompt("German"))
    french = Agent(TestModel(), instructions=make_prompt("French"))
    assert key(german) != key(french)
    assert key(german) == key(Agent(TestModel(), instructions=make_prompt("German")))


def test_default_argument_values_are_keyed() -> None:
    def terse(style: str = "terse") -> str:
        return f"Be {style}."

    def chatty(style: str = "chatty") -> str:
        return f"Be {style}."

    chatty.__qualname__ = terse.__qualname__  # same name and body, only the default differs
    assert key(Agent(TestModel(), instructions=terse)) != key(Agent(TestModel(), instructions=chatty))


@dataclass
class Persona:
    tone: str

    def instructions(self) -> str:
        return f"Speak in a {self.tone} tone."


def test_bound_methods_of_different_instances_are_different_keys() -> None:
    warm = Agent(TestModel(), instructions=Persona("warm").instructions)
    cold = Agent(TestModel(), instructions=Persona("cold").instructions)
    assert key(warm) != key(cold)
    assert key(warm) == key(Agent(TestModel(), instructions=Persona("warm").instructions))


class Opaque:
    def instructions(self) -> str:
        return "Be brief."


def test_closures_and_methods_over_values_with_no_data_form_are_unkeyable() -> None:
    client = Opaque()

    def uses_client() -> str:
        return client.instructions()

    with pytest.raises(UnkeyableError, match="closes over"):
        key(Agent(TestModel(), instructions=uses_client))
    with pytest.raises(UnkeyableError, match="Opaque"):
        key(Agent(TestModel(), instructions=client.instructions))


def test_a_recursive_closure_is_keyed() -> None:
    def outer() -> Any:
        def countdown(n: int = 3) -> str:
            return "go" if n == 0 else countdown(n - 1)

        return countdown

    assert key(Agent(TestModel(), instructions=outer())) == key(Agent(TestModel(), instructions=outer()))


# ----------------------------------------------------------------- key_extra


def test_key_extra_int_and_str_keys_do_not_collide() -> None:
    agent = Agent(TestModel())
    assert key(agent, key_extra={1: "a"}) != key(agent, key_extra={"1": "a"})
    assert key(agent, key_extra=(1, 2)) != key(agent, key_extra=[1, 2])
    assert key(agent, key_extra={"b": 1, "a": 2}) == key(agent, key_extra={"a": 2, "b": 1})


def test_histories_differing_only_in_gemini_thought_signatures_get_different_keys() -> None:
    """Gemini gets a text or tool call part's thought signature back with it (`thought_signature`, or
    `extra_content` through an OpenAI-compatible endpoint): it carries the model's reasoning into the answer."""
    agent = Agent(TestModel())
    request = ModelRequest(parts=[UserPromptPart("Capital of France?")])

    def history(signature: str) -> list[Any]:
        details = {"thought_signature": signature}
        return [request, ModelResponse(parts=[TextPart("Paris.", provider_details=details)], provider_name="google-gla")]

    assert key(agent, history=history("c2lnLWE=")) != key(agent, history=history("c2lnLWI="))

    def call(extra: Any) -> list[Any]:
        part = ToolCallPart("lookup", {"q": "Paris"}, tool_call_id="c1", provider_details={"extra_content": extra})
        return [request, ModelResponse(parts=[part])]

    assert key(agent, history=call({"google": {"thought_signature": "a"}})) != key(
        agent, history=call({"google": {"thought_signature": "b"}})
    )


def test_histories_differing_only_in_what_the_responses_api_gets_back_get_different_keys() -> None:
    """`OpenAIResponsesModel` sends a text's `phase` (`commentary`, `final_answer`) and a tool call's `namespace` (a
    tool found by tool search) back with them; a history without them is another request too."""
    agent = Agent(TestModel())
    request = ModelRequest(parts=[UserPromptPart("Capital of France?")])

    def text(details: Any) -> list[Any]:
        return [request, ModelResponse(parts=[TextPart("Paris.", provider_details=details)], provider_name="openai")]

    keys = {key(agent, history=text(d)) for d in ({"phase": "commentary"}, {"phase": "final_answer"}, None)}
    assert len(keys) == 3

    def call(namespace: str) -> list[Any]:
        part = ToolCallPart("lookup", {"q": "Paris"}, tool_call_id="c1", provider_details={"namespace": namespace})
        return [request, ModelResponse(parts=[part], provider_name="openai")]

    assert key(agent, history=call("a")) != key(agent, history=call("b"))


# ----------------------------------------------------------------- should hit


@pytest.mark.skipif(
    "canonical_system" not in {f.name for f in dataclasses.fields(ModelResponse)},
    reason="ModelResponse.canonical_system arrived in PydanticAI 2.63",
)
def test_a_history_rebuilt_by_hand_ignores_canonical_system() -> None:
    agent = Agent(TestModel())
    request = ModelRequest(parts=[UserPromptPart("Capital of France?")])
    from_api = ModelResponse(parts=[TextPart("Paris.")], provider_name="openai", canonical_system="openai")
    by_hand = ModelResponse(parts=[TextPart("Paris.")])
    assert key(agent, history=[request, from_api]) == key(agent, history=[request, by_hand])


def test_a_part_subclassed_outside_pydantic_ai_messages_is_keyed_as_the_part_it_extends() -> None:
    """Typed tool parts (`ToolSearchReturnPart`) and a user's own subclasses are sent as the part they extend: their
    timestamps are not content, so a history regenerated or rebuilt hits."""

    @dataclass(repr=False)
    class AuditedReturn(ToolReturnPart):
        pass

    agent = Agent(TestModel())
    call = ModelResponse(parts=[ToolCallPart("lookup", {"q": "Paris"}, tool_call_id="c1")])

    def history(part: Any) -> list[Any]:
        return [ModelRequest(parts=[UserPromptPart("Capital of France?")]), call, ModelRequest(parts=[part])]

    first = AuditedReturn("lookup", "Paris", tool_call_id="c1", timestamp=datetime(2024, 1, 1))
    again = AuditedReturn("lookup", "Paris", tool_call_id="c1", timestamp=datetime(2025, 6, 1))
    other = AuditedReturn("lookup", "Lyon", tool_call_id="c1", timestamp=datetime(2024, 1, 1))
    assert key(agent, history=history(first)) == key(agent, history=history(again))
    assert key(agent, history=history(first)) != key(agent, history=history(other))


def test_arguments_passed_as_none_are_arguments_left_out() -> None:
    agent = Agent(TestModel())
    assert key(agent, instructions=None) == key(agent)
    assert key(agent, deferred_tool_results=None) == key(agent)


def test_transport_settings_are_not_keyed_but_behaviour_headers_are() -> None:
    agent = Agent(TestModel())
    base = key(agent, model_settings={"temperature": 0})
    for transport in ({"timeout": 5}, {"request_timeout": 9}, {"first_event_timeout": 2}, {"max_retries": 4}):
        assert key(agent, model_settings={"temperature": 0, **transport}) == base
    beta = key(agent, model_settings={"temperature": 0, "extra_headers": {"anthropic-beta": "context-1m"}})
    assert beta != base
    auth = {"Authorization": "Bearer sk-1", "x-api-key": "k", "anthropic-beta": "context-1m"}
    assert key(agent, model_settings={"temperature": 0, "extra_headers": auth}) == beta
    assert key(agent, model_settings={"temperature": 0, "extra_headers": {"Authorization": "Bearer sk-1"}}) == base


PROBE = textwrap.dedent(
    '''
    from pydantic import BaseModel
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelRequest, ModelResponse, ToolCallPart, ToolReturnPart, UserPromptPart
    from pydantic_ai.models.test import TestModel
    from pyai_caching._keys import request_digest

    class Filters(BaseModel):
        tags: set[str]
        ids: frozenset[int]

    def compute() -> str:
        filters = Filters(tags={"alpha", "beta", "gamma", "delta", "epsilon"}, ids=frozenset({3, 1, 2}))
        history = [
            ModelRequest(parts=[UserPromptPart("find")]),
            ModelResponse(parts=[ToolCallPart("search", {"q": "x"}, tool_call_id="c1")]),
            ModelRequest(parts=[ToolReturnPart("search", filters, tool_call_id="c1")]),
        ]
        return request_digest(Agent(TestModel()), "next", history, {}, {"filters": filters})
    '''
)


def test_pydantic_sets_hash_the_same_in_every_process(tmp_path: Path) -> None:
    (tmp_path / "setprobe.py").write_text(PROBE)
    digests = set()
    for seed in ("0", "1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
        out = subprocess.run(
            [sys.executable, "-c", "import setprobe; print(setprobe.compute())"],
            env=env, capture_output=True, text=True, check=True, timeout=120,
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_tool_returns_differing_in_content_are_different_keys() -> None:
    agent = Agent(TestModel())

    def history(content: Any) -> list[Any]:
        return [
            ModelRequest(parts=[UserPromptPart("find")]),
            ModelResponse(parts=[ToolCallPart("search", {"q": "x"}, tool_call_id="c1")]),
            ModelRequest(parts=[ToolReturnPart("search", content, tool_call_id="c1")]),
        ]

    assert key(agent, history=history({"hits": 1})) != key(agent, history=history({"hits": 2}))


# ----------------------------------------------------------------- a model's own state is not its identity


def scripted_model(reply: str) -> tuple[FunctionModel, list[int]]:
    calls: list[int] = []
    count = 0

    def respond(messages: Any, info: AgentInfo) -> ModelResponse:
        nonlocal count
        count += 1
        calls.append(count)
        return ModelResponse(parts=[TextPart(reply)])

    return FunctionModel(respond), calls


async def test_a_function_models_call_counters_are_state_but_its_configuration_is_keyed() -> None:
    model, calls = scripted_model("yes")
    agent = Agent(model)
    before = key(agent)
    await agent.run("question")
    await agent.run("question")
    assert calls == [1, 2]
    assert key(agent) == before  # the counters changed; the model did not
    assert key(Agent(scripted_model("no")[0])) != before  # the reply it closes over is configuration


# ----------------------------------------------------------------- capabilities, subclasses, client configuration


def test_hooks_registered_on_a_hooks_capability_are_keyed() -> None:
    from pydantic_ai.capabilities import Hooks

    def language(lang: str) -> Any:
        async def add(ctx: Any, request_context: Any) -> Any:
            request_context.messages[-1].parts.append(UserPromptPart(f"Answer in {lang}"))
            return request_context

        return add

    french = Agent(TestModel(), capabilities=[Hooks(before_model_request=language("French"))])
    german = Agent(TestModel(), capabilities=[Hooks(before_model_request=language("German"))])
    assert key(french) != key(german)


class TonedModel(FunctionModel):
    """A model subclass configured in `__init__`, without `@dataclass` of its own."""

    def __init__(self, tone: str) -> None:
        super().__init__(self.respond)
        self.tone = tone

    def respond(self, messages: Any, info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart(f"{self.tone} hello")])


def test_attributes_a_subclass_sets_in_init_are_keyed() -> None:
    assert key(Agent(TonedModel("warm"))) != key(Agent(TonedModel("cold")))
    assert key(Agent(TonedModel("warm"))) == key(Agent(TonedModel("warm")))


def test_headers_and_query_on_the_sdk_client_are_keyed_but_not_its_key() -> None:
    from openai import AsyncOpenAI

    def agent(**client: Any) -> Agent[Any, Any]:
        sdk = AsyncOpenAI(base_url="http://proxy/v1", api_key=client.pop("api_key", "sk-1"), **client)
        return Agent(OpenAIChatModel("gpt-4o", provider=OpenAIProvider(openai_client=sdk)))

    assert key(agent(default_headers={"OpenAI-Beta": "assistants=v2"})) != key(agent())
    assert key(agent(default_query={"api-version": "2024-10-21"})) != key(agent(default_query={"api-version": "2025-01-01"}))
    assert key(agent(api_key="sk-other")) == key(agent())
    assert key(agent(default_headers={"Authorization": "Bearer x"})) == key(agent())


LANGUAGE = {"name": "French"}


def answer_in_the_configured_language() -> str:
    return f"Answer in {LANGUAGE['name']}."


def test_plain_data_a_function_reads_from_its_module_is_keyed() -> None:
    agent = Agent(TestModel(), instructions=answer_in_the_configured_language)
    french = key(agent)
    LANGUAGE["name"] = "German"
    try:
        assert key(agent) != french
    finally:
        LANGUAGE["name"] = "French"
    assert key(agent) == french


def _compacted(user: str) -> list[Any]:
    from pydantic_ai.messages import CompactionPart, ModelResponse

    details = {"type": "compaction", "encrypted_content": f"<{user}'s whole conversation>"}
    return [ModelResponse(parts=[CompactionPart(content=None, id=f"cmp_{user}", provider_name="openai", provider_details=details)])]


def test_compacted_conversations_differing_only_in_their_compaction_get_different_keys() -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models import ModelRequestParameters
    from pydantic_ai.models.test import TestModel

    from pyai_caching._keys import request_digest
    from pyai_caching._keys._requests import model_request_digest

    agent = Agent(TestModel())
    assert request_digest(agent, "q", _compacted("alice"), {}) != request_digest(agent, "q", _compacted("bob"), {})
    params = ModelRequestParameters()
    assert model_request_digest(TestModel(), _compacted("alice"), None, params) != model_request_digest(
        TestModel(), _compacted("bob"), None, params
    )


def test_instruction_parts_differing_only_in_their_id_get_different_keys() -> None:
    from pydantic_ai.messages import InstructionPart, ModelRequest, UserPromptPart
    from pydantic_ai.models import ModelRequestParameters
    from pydantic_ai.models.test import TestModel

    from pyai_caching._keys._requests import model_request_digest

    def key(part_id: str) -> str:
        params = ModelRequestParameters(instruction_parts=[InstructionPart("be brief", id=part_id)])
        return model_request_digest(TestModel(), [ModelRequest(parts=[UserPromptPart("q")])], None, params)

    assert key("agent:tone") != key("toolset:search:limits")


async def test_an_agent_changed_in_place_between_calls_gets_a_new_key() -> None:
    """Nothing about the agent's configuration is remembered between calls: settings edited in place, a tool
    registered later, instructions appended, a model swapped on the agent all miss (and are stored apart)."""
    agent = Agent(TestModel(custom_output_text="first"), model_settings={"temperature": 0.0})
    store = MemoryStore()
    keys = [(await cached_agent_run(agent, "q", "t", store=store)).cache_key]
    agent.model_settings["temperature"] = 0.9  # type: ignore[index]
    keys.append((await cached_agent_run(agent, "q", "t", store=store)).cache_key)

    @agent.tool_plain
    def lookup(term: str) -> str:
        return term

    keys.append((await cached_agent_run(agent, "q", "t", store=store)).cache_key)
    agent.model = TestModel(custom_output_text="second")
    last = await cached_agent_run(agent, "q", "t", store=store)
    keys.append(last.cache_key)
    assert len(set(keys)) == 4 and not last.cached
    assert (await cached_agent_run(agent, "q", "t", store=store)).cached  # unchanged since: a hit
