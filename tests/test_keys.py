"""Pure tests of key derivation: `request_digest` covers what changes the answer, and nothing else.

Every test compares the digest of a baseline with the digest of a variant (never a hard-coded
digest, except where stability across processes is the point), so it fails if either half of the
contract breaks: something that changes the answer not being keyed, or something that does not
(timestamps, ids, names, deps) leaking into the key.
"""

from __future__ import annotations

import decimal
import enum
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
import pathlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent, RunContext
from pydantic_ai.capabilities import Thinking
from pydantic_ai.conversation import Conversation
from pydantic_ai.messages import (
    BinaryContent,
    ImageUrl,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import UsageLimits

from pyai_caching._keys._agent import _tagged
from pyai_caching._keys import (
    KEY_VERSION,
    UnkeyableError,
    canonical_json,
    format_key,
    request_digest,
)

# --------------------------------------------------------------------------- helpers


class Answer(BaseModel):
    text: str


class Other(BaseModel):
    number: int


def answer_type(*, with_confidence: bool) -> type[BaseModel]:
    """Two output types that differ only by one field: same name, same qualified name, same title."""
    if with_confidence:

        class Answer(BaseModel):
            text: str
            confidence: float

    else:

        class Answer(BaseModel):  # type: ignore[no-redef]
            text: str

    return Answer


def lookup_tool(*, param: type = int, doc: str = "Look a record up by id.") -> Callable[..., str]:
    """A tool named `lookup` whose parameter type or docstring can vary while its name stays put."""
    if param is int:

        def lookup(record_id: int) -> str:
            return str(record_id)

    else:

        def lookup(record_id: str) -> str:  # type: ignore[misc]
            return record_id

    lookup.__doc__ = doc
    return lookup


def make_agent(**kwargs: Any) -> Agent[Any, Any]:
    """The baseline agent; keyword arguments replace one piece of its configuration."""
    config: dict[str, Any] = {
        "model": TestModel(),
        "output_type": Answer,
        "system_prompt": "You are terse.",
        "instructions": "Answer in English.",
        "model_settings": {"temperature": 0.0},
        "tools": [lookup_tool()],
    }
    config.update(kwargs)
    return Agent(**config)


def digest(
    agent: Agent[Any, Any] | None = None,
    prompt: Any = "What is the capital of France?",
    history: list[ModelMessage] | None = None,
    run_kwargs: dict[str, Any] | None = None,
    key_extra: Any = None,
) -> str:
    return request_digest(
        agent if agent is not None else make_agent(),
        prompt,
        history if history is not None else [],
        run_kwargs if run_kwargs is not None else {},
        key_extra,
    )


T0 = datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc)
T1 = datetime(2025, 6, 30, 8, 30, tzinfo=timezone.utc)


def history(reply: str = "Paris.", *, at: datetime = T0, run_id: str = "run-1") -> list[ModelMessage]:
    return [
        ModelRequest(parts=[UserPromptPart(content="Capital of France?", timestamp=at)], timestamp=at, run_id=run_id),
        ModelResponse(parts=[TextPart(content=reply)], timestamp=at, run_id=run_id, model_name="test"),
    ]


# --------------------------------------------------------------------------- format_key


def test_format_key() -> None:
    d = hashlib.sha256(b"x").hexdigest()
    assert format_key("myapp", "summarise", d) == f"myapp:v2:summarise:{d}"
    assert KEY_VERSION == "v2"


def test_digest_is_sha256_hex() -> None:
    d = digest()
    assert len(d) == 64
    int(d, 16)


# --------------------------------------------------------------------------- what is in the key


def _with_instructions_function(name: str) -> Agent[Any, Any]:
    agent = make_agent()
    if name == "formal":

        @agent.instructions
        def formal() -> str:
            return "Be formal."

    else:

        @agent.instructions
        def casual() -> str:
            return "Be casual."

    return agent


def _with_system_prompt_function(name: str) -> Agent[Any, Any]:
    agent = make_agent()
    if name == "today":

        @agent.system_prompt(dynamic=True)
        def today(ctx: RunContext[Any]) -> str:
            return "Today is Monday."

    else:

        @agent.system_prompt(dynamic=True)
        def user_name(ctx: RunContext[Any]) -> str:
            return "The user is Ann."

    return agent


def _with_extra_tool() -> Agent[Any, Any]:
    def weather(city: str) -> str:
        """Current weather in a city."""
        return "sunny"

    return make_agent(tools=[lookup_tool(), weather])


@dataclass(frozen=True)
class Variant:
    """A baseline and a variant that must hash differently."""

    baseline: Callable[[], str]
    variant: Callable[[], str]


DIFFERENCES: dict[str, Variant] = {
    "model": Variant(
        lambda: digest(make_agent(model=TestModel(model_name="alpha"))),
        lambda: digest(make_agent(model=TestModel(model_name="beta"))),
    ),
    "run model= override": Variant(
        lambda: digest(),
        lambda: digest(run_kwargs={"model": TestModel(model_name="beta")}),
    ),
    "system prompt": Variant(
        lambda: digest(make_agent(system_prompt="You are terse.")),
        lambda: digest(make_agent(system_prompt="You are verbose.")),
    ),
    "static instructions": Variant(
        lambda: digest(make_agent(instructions="Answer in English.")),
        lambda: digest(make_agent(instructions="Answer in French.")),
    ),
    "adding an @agent.instructions function": Variant(
        lambda: digest(make_agent()),
        lambda: digest(_with_instructions_function("formal")),
    ),
    "a different @agent.instructions function": Variant(
        lambda: digest(_with_instructions_function("formal")),
        lambda: digest(_with_instructions_function("casual")),
    ),
    "adding a dynamic @agent.system_prompt function": Variant(
        lambda: digest(make_agent()),
        lambda: digest(_with_system_prompt_function("today")),
    ),
    "a different dynamic @agent.system_prompt function": Variant(
        lambda: digest(_with_system_prompt_function("today")),
        lambda: digest(_with_system_prompt_function("user_name")),
    ),
    "output type: a field added": Variant(
        lambda: digest(make_agent(output_type=answer_type(with_confidence=False))),
        lambda: digest(make_agent(output_type=answer_type(with_confidence=True))),
    ),
    "output type: run output_type=": Variant(
        lambda: digest(),
        lambda: digest(run_kwargs={"output_type": Other}),
    ),
    "output type: str vs model": Variant(
        lambda: digest(make_agent(output_type=str)),
        lambda: digest(make_agent(output_type=Answer)),
    ),
    "adding a tool": Variant(
        lambda: digest(make_agent()),
        lambda: digest(_with_extra_tool()),
    ),
    "a tool's parameter type": Variant(
        lambda: digest(make_agent(tools=[lookup_tool(param=int)])),
        lambda: digest(make_agent(tools=[lookup_tool(param=str)])),
    ),
    "a tool's docstring (description)": Variant(
        lambda: digest(make_agent(tools=[lookup_tool(doc="Look a record up by id.")])),
        lambda: digest(make_agent(tools=[lookup_tool(doc="Delete a record by id.")])),
    ),
    "agent model settings (temperature)": Variant(
        lambda: digest(make_agent(model_settings={"temperature": 0.0})),
        lambda: digest(make_agent(model_settings={"temperature": 0.7})),
    ),
    "run model settings (temperature)": Variant(
        lambda: digest(),
        lambda: digest(run_kwargs={"model_settings": {"temperature": 0.7}}),
    ),
    "run model settings override the agent's": Variant(
        lambda: digest(make_agent(model_settings={"temperature": 0.0})),
        lambda: digest(make_agent(model_settings={"temperature": 0.0}), run_kwargs={"model_settings": {"temperature": 1.0}}),
    ),
    "model's own settings": Variant(
        lambda: digest(make_agent(model=TestModel(settings={"max_tokens": 10}))),
        lambda: digest(make_agent(model=TestModel(settings={"max_tokens": 20}))),
    ),
    "prompt text": Variant(
        lambda: digest(prompt="What is the capital of France?"),
        lambda: digest(prompt="What is the capital of Spain?"),
    ),
    "prompt: str vs user content list": Variant(
        lambda: digest(prompt="Describe"),
        lambda: digest(prompt=["Describe", ImageUrl(url="https://example.com/a.png")]),
    ),
    "prompt: BinaryContent bytes": Variant(
        lambda: digest(prompt=["Describe", BinaryContent(data=b"\x89PNG one", media_type="image/png")]),
        lambda: digest(prompt=["Describe", BinaryContent(data=b"\x89PNG two", media_type="image/png")]),
    ),
    "prompt: BinaryContent media type": Variant(
        lambda: digest(prompt=["Describe", BinaryContent(data=b"data", media_type="image/png")]),
        lambda: digest(prompt=["Describe", BinaryContent(data=b"data", media_type="image/jpeg")]),
    ),
    "prompt: ImageUrl url": Variant(
        lambda: digest(prompt=["Describe", ImageUrl(url="https://example.com/a.png")]),
        lambda: digest(prompt=["Describe", ImageUrl(url="https://example.com/b.png")]),
    ),
    "history content": Variant(
        lambda: digest(history=history("Paris.")),
        lambda: digest(history=history("Lyon.")),
    ),
    "history vs no history": Variant(
        lambda: digest(history=[]),
        lambda: digest(history=history()),
    ),
    "history order": Variant(
        lambda: digest(history=history()),
        lambda: digest(history=list(reversed(history()))),
    ),
    "key_extra": Variant(
        lambda: digest(key_extra=None),
        lambda: digest(key_extra={"user_tier": "gold"}),
    ),
    "key_extra value": Variant(
        lambda: digest(key_extra={"user_tier": "gold"}),
        lambda: digest(key_extra={"user_tier": "silver"}),
    ),
    "run instructions=": Variant(
        lambda: digest(),
        lambda: digest(run_kwargs={"instructions": "Answer in French."}),
    ),
    "run capabilities=": Variant(
        lambda: digest(run_kwargs={"capabilities": [Thinking(effort="low")]}),
        lambda: digest(run_kwargs={"capabilities": [Thinking(effort="high")]}),
    ),
    "agent capabilities=": Variant(
        lambda: digest(make_agent()),
        lambda: digest(make_agent(capabilities=[Thinking(effort="high")])),
    ),
    "conversation= history": Variant(
        lambda: digest(run_kwargs={"conversation": Conversation(messages=history("Paris."))}),
        lambda: digest(run_kwargs={"conversation": Conversation(messages=history("Lyon."))}),
    ),
}


@pytest.mark.parametrize("case", DIFFERENCES.values(), ids=DIFFERENCES.keys())
def test_each_agent_config_difference_is_a_different_key(case: Variant) -> None:
    baseline = case.baseline()
    assert baseline == case.baseline(), "the baseline itself must be deterministic"
    assert baseline != case.variant()


# --------------------------------------------------------------------------- effective model


def test_agent_override_model_changes_the_key() -> None:
    agent = make_agent(model=TestModel(model_name="alpha"))
    outside = digest(agent)
    with agent.override(model=TestModel(model_name="beta")):
        inside = digest(agent)
    assert inside != outside
    assert inside == digest(make_agent(model=TestModel(model_name="beta")))
    assert digest(agent) == outside, "the override ends with its context"


def test_agent_override_model_wins_over_run_model() -> None:
    """PydanticAI's order (`Agent._pick_raw_model`): override, then the run's `model=`, then the agent's."""
    agent = make_agent(model=TestModel(model_name="alpha"))
    run = {"model": TestModel(model_name="gamma")}
    with agent.override(model=TestModel(model_name="beta")):
        inside = digest(agent, run_kwargs=run)
    assert inside == digest(make_agent(model=TestModel(model_name="beta")))
    assert inside != digest(agent, run_kwargs=run)


def test_run_model_is_keyed_like_the_agent_model() -> None:
    """`model=` on the run wins over the agent's: the same effective model is the same key."""
    via_run = digest(make_agent(model=TestModel(model_name="alpha")), run_kwargs={"model": TestModel(model_name="beta")})
    via_agent = digest(make_agent(model=TestModel(model_name="beta")))
    assert via_run == via_agent


def test_agent_override_settings_and_instructions_change_the_key() -> None:
    agent = make_agent()
    outside = digest(agent)
    with agent.override(model_settings={"temperature": 0.9}):
        settings = digest(agent)
        # PydanticAI ignores run settings under an override; so does the key.
        assert digest(agent, run_kwargs={"model_settings": {"temperature": 0.1}}) == settings
    with agent.override(instructions="Answer in German."):
        instructions = digest(agent)
    assert len({outside, settings, instructions}) == 3
    assert instructions == digest(make_agent(instructions="Answer in German."))


def test_agent_override_tools_changes_the_key() -> None:
    agent = make_agent()
    outside = digest(agent)
    with agent.override(tools=[lookup_tool(param=str)]):
        inside = digest(agent)
    assert inside != outside
    assert inside == digest(make_agent(tools=[lookup_tool(param=str)]))


# --------------------------------------------------------------------------- model settings merge


def test_settings_merge_is_by_value() -> None:
    """Agent {temperature} + run {max_tokens} is the same request as run {temperature, max_tokens}."""
    merged = digest(
        make_agent(model_settings={"temperature": 0.3}),
        run_kwargs={"model_settings": {"max_tokens": 100}},
    )
    run_only = digest(
        make_agent(model_settings=None),
        run_kwargs={"model_settings": {"temperature": 0.3, "max_tokens": 100}},
    )
    agent_only = digest(make_agent(model_settings={"max_tokens": 100, "temperature": 0.3}))
    assert merged == run_only == agent_only


def test_run_setting_overriding_the_agent_setting_is_by_value() -> None:
    overridden = digest(make_agent(model_settings={"temperature": 0.0}), run_kwargs={"model_settings": {"temperature": 0.5}})
    direct = digest(make_agent(model_settings={"temperature": 0.5}))
    assert overridden == direct


# --------------------------------------------------------------------------- what is not in the key


NOT_IN_KEY: dict[str, Variant] = {
    "deps": Variant(
        lambda: digest(run_kwargs={"deps": {"user": "ann"}}),
        lambda: digest(run_kwargs={"deps": {"user": "bob"}}),
    ),
    "deps absent vs present (even unkeyable)": Variant(
        lambda: digest(),
        lambda: digest(run_kwargs={"deps": object()}),
    ),
    "usage_limits": Variant(
        lambda: digest(),
        lambda: digest(run_kwargs={"usage_limits": UsageLimits(request_limit=3)}),
    ),
    "agent name": Variant(
        lambda: digest(make_agent(name="alpha")),
        lambda: digest(make_agent(name="beta")),
    ),
    "timestamps and run ids in history": Variant(
        lambda: digest(history=history(at=T0, run_id="run-1")),
        lambda: digest(history=history(at=T1, run_id="run-2")),
    ),
    "model_settings timeout (agent)": Variant(
        lambda: digest(make_agent(model_settings={"temperature": 0.0})),
        lambda: digest(make_agent(model_settings={"temperature": 0.0, "timeout": 30})),
    ),
    "model_settings timeout (run)": Variant(
        lambda: digest(),
        lambda: digest(run_kwargs={"model_settings": {"timeout": 5.0}}),
    ),
    "run metadata, run_id, conversation_id, infer_name": Variant(
        lambda: digest(),
        lambda: digest(
            run_kwargs={"metadata": {"trace": "x"}, "run_id": "r-9", "conversation_id": "c-9", "infer_name": False}
        ),
    ),
    "conversation= vs message_history with the same messages": Variant(
        lambda: digest(history=history(at=T0, run_id="run-1")),
        lambda: digest(run_kwargs={"conversation": Conversation(messages=history(at=T1, run_id="run-2"))}),
    ),
}


@pytest.mark.parametrize("case", NOT_IN_KEY.values(), ids=NOT_IN_KEY.keys())
def test_not_in_the_key(case: Variant) -> None:
    assert case.baseline() == case.variant()


def test_provider_response_ids_and_conversation_ids_are_not_in_the_key() -> None:
    def messages(suffix: str, at: datetime) -> list[ModelMessage]:
        return [
            ModelRequest(
                parts=[UserPromptPart(content="Hi", timestamp=at)],
                timestamp=at,
                run_id=f"run-{suffix}",
                conversation_id=f"conv-{suffix}",
            ),
            ModelResponse(
                parts=[TextPart(content="Hello!", id=f"msg-{suffix}")],
                timestamp=at,
                run_id=f"run-{suffix}",
                conversation_id=f"conv-{suffix}",
                provider_response_id=f"resp-{suffix}",
                model_name=f"gpt-{suffix}",
            ),
        ]

    assert digest(history=messages("a", T0)) == digest(history=messages("b", T1 + timedelta(days=3)))


async def test_history_from_a_run_equals_the_same_history_built_by_hand() -> None:
    """`result.all_messages()` and hand-built messages with the same content (other timestamps) hit."""
    agent = Agent(TestModel(custom_output_text="Paris."))
    result = await agent.run("Capital of France?")
    from_run = result.all_messages()

    by_hand: list[ModelMessage] = [
        ModelRequest(parts=[UserPromptPart(content="Capital of France?", timestamp=T0)], timestamp=T0),
        ModelResponse(parts=[TextPart(content="Paris.")], timestamp=T0),
    ]
    other_agent = make_agent()
    assert digest(other_agent, "And Spain?", from_run) == digest(other_agent, "And Spain?", by_hand)
    changed = [by_hand[0], ModelResponse(parts=[TextPart(content="Lyon.")], timestamp=T0)]
    assert digest(other_agent, "And Spain?", from_run) != digest(other_agent, "And Spain?", changed)


def test_history_message_state_is_in_the_key() -> None:
    """A suspended response makes PydanticAI continue it: not the same request as a complete one."""
    complete = history()
    suspended = [complete[0], ModelResponse(parts=[TextPart(content="Paris.")], timestamp=T0, state="suspended")]
    assert digest(history=complete) != digest(history=suspended)


async def test_agent_name_set_by_the_first_run_does_not_change_the_key() -> None:
    agent_under_test = make_agent(model=TestModel(custom_output_args={"text": "Paris"}))
    assert agent_under_test.name is None
    before = digest(agent_under_test)
    await agent_under_test.run("What is the capital of France?")
    assert agent_under_test.name == "agent_under_test", "PydanticAI infers the name on the first run"
    assert digest(agent_under_test) == before


def test_identical_agents_built_separately_have_the_same_key() -> None:
    """No memory addresses: two agents built the same way (fresh models, tools, output types) are one key."""

    def build() -> Agent[Any, Any]:
        agent = make_agent(model=TestModel(model_name="alpha"), tools=[lookup_tool()])

        @agent.instructions
        def formal() -> str:
            return "Be formal."

        @agent.system_prompt
        def context(ctx: RunContext[Any]) -> str:
            return "Context."

        @agent.output_validator
        def check(ctx: RunContext[Any], output: Any) -> Any:
            return output

        return agent

    a, b = build(), build()
    assert a is not b
    prompt = ["Describe", BinaryContent(data=b"img", media_type="image/png"), ImageUrl(url="https://e.com/x.png")]
    assert digest(a, prompt, history()) == digest(b, prompt, history())


def test_dict_order_does_not_change_the_key() -> None:
    assert digest(key_extra={"a": 1, "b": 2}) == digest(key_extra={"b": 2, "a": 1})
    assert digest(run_kwargs={"model_settings": {"temperature": 0.1, "max_tokens": 5}}) == digest(
        run_kwargs={"model_settings": {"max_tokens": 5, "temperature": 0.1}}
    )


# --------------------------------------------------------------------------- unkeyable objects


class Opaque:
    """An object with no stable data form."""


def test_arbitrary_object_in_key_extra_is_unkeyable() -> None:
    with pytest.raises(UnkeyableError):
        digest(key_extra={"client": Opaque()})


def test_arbitrary_object_in_model_settings_is_unkeyable() -> None:
    with pytest.raises(UnkeyableError):
        digest(run_kwargs={"model_settings": {"extra_body": Opaque()}})
    with pytest.raises(UnkeyableError):
        digest(make_agent(model_settings={"extra_body": Opaque()}))


def test_unkeyable_error_is_a_type_error() -> None:
    assert issubclass(UnkeyableError, TypeError)


def test_non_agent_is_unkeyable() -> None:
    with pytest.raises(UnkeyableError):
        request_digest(object(), "hi", [], {})  # type: ignore[arg-type]


def test_override_spec_with_capabilities_is_unkeyable() -> None:
    """`override(spec=...)` replaces every capability contribution: refuse rather than key too little."""
    agent = make_agent()
    with agent.override(spec={"capabilities": ["Thinking"]}):  # adds `thinking=True` to the model settings
        with pytest.raises(UnkeyableError):
            digest(agent)
    digest(agent)  # keyable again once the override ends


def test_canonical_json_is_compact_sorted_and_hashes_bytes() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'
    as_data = json.loads(canonical_json({"blob": b"\x00\x01"}))
    assert as_data == {"blob": {"__sha256__": hashlib.sha256(b"\x00\x01").hexdigest()}}
    with pytest.raises(UnkeyableError):
        canonical_json(Opaque())


# --------------------------------------------------------------------------- stability across processes


PROBE = textwrap.dedent(
    '''
    from typing import Any

    from pydantic import BaseModel
    from pydantic_ai import Agent, RunContext
    from pydantic_ai.messages import BinaryContent, ImageUrl, ModelRequest, ModelResponse, TextPart, UserPromptPart
    from pydantic_ai.models.test import TestModel

    from pyai_caching._keys import request_digest


    class Verdict(BaseModel):
        label: str
        score: float
        tags: set[str] = set()


    def build() -> Agent[Any, Any]:
        def search(query: str, limit: int = 5) -> list[str]:
            """Search the catalogue."""
            return []

        agent = Agent(
            TestModel(model_name="probe", settings={"max_tokens": 50}),
            output_type=Verdict,
            system_prompt="You grade answers.",
            instructions="Be strict.",
            model_settings={"temperature": 0.2, "stop_sequences": ["END"]},
            tools=[search],
        )

        @agent.instructions
        def rubric(ctx: RunContext[Any]) -> str:
            return "Use the rubric."

        return agent


    def compute() -> str:
        prompt = ["Grade this", BinaryContent(data=b"\\x89PNG", media_type="image/png"), ImageUrl(url="https://e.com/x.png")]
        history = [
            ModelRequest(parts=[UserPromptPart(content="Earlier question")]),
            ModelResponse(parts=[TextPart(content="Earlier answer")]),
        ]
        return request_digest(
            build(),
            prompt,
            history,
            {"model_settings": {"seed": 7}, "deps": object()},
            key_extra={"rubric": "v2", "tags": {"gamma", "alpha", "beta", "delta"}},
        )
    '''
)


def test_digest_is_stable_across_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "keyprobe.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import keyprobe  # noqa: PLC0415 - generated above

    in_process = keyprobe.compute()
    assert in_process == keyprobe.compute()

    digests = set()
    for seed in ("0", "1", "12345"):  # string and set hashing differ per process
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
        out = subprocess.run(
            [sys.executable, "-c", "import keyprobe; print(keyprobe.compute())"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        digests.add(out.stdout.strip())
    assert digests == {in_process}


def test_lambdas_of_one_scope_and_edited_functions_are_different_keys() -> None:
    french = Agent(TestModel(), instructions=lambda: "Answer in French")
    german = Agent(TestModel(), instructions=lambda: "Answer in German")
    assert request_digest(french, "q", [], {}) != request_digest(german, "q", [], {})

    def version_one() -> str:
        return "be terse"

    def version_two() -> str:  # same qualified name once renamed below, other body
        return "be verbose"

    version_two.__qualname__ = version_one.__qualname__
    version_two.__name__ = version_one.__name__
    a = Agent(TestModel(), instructions=version_one)
    b = Agent(TestModel(), instructions=version_two)
    assert request_digest(a, "q", [], {}) != request_digest(b, "q", [], {})


def test_capabilities_acting_through_hooks_are_in_the_key() -> None:
    from pydantic_ai.capabilities import ProcessHistory

    def keep_last(messages: list[Any]) -> list[Any]:
        return messages[-1:]

    plain = Agent(TestModel())
    processed = Agent(TestModel(), capabilities=[ProcessHistory(keep_last)])
    assert request_digest(plain, "q", [], {}) != request_digest(processed, "q", [], {})


def test_toolsets_are_keyed_by_their_tools_or_not_at_all() -> None:
    from pydantic_ai.tools import ToolDefinition
    from pydantic_ai.toolsets import AbstractToolset, ExternalToolset

    weather = Agent(TestModel(), toolsets=[ExternalToolset([ToolDefinition(name="get_weather")])])
    delete = Agent(TestModel(), toolsets=[ExternalToolset([ToolDefinition(name="delete_account")])])
    assert request_digest(weather, "q", [], {}) != request_digest(delete, "q", [], {})

    class Opaque(AbstractToolset[Any]):
        @property
        def id(self) -> str | None:
            return "opaque"

        async def get_tools(self, ctx: Any) -> dict[str, Any]:
            return {}

        async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: Any, tool: Any) -> Any:
            return None

    with pytest.raises(UnkeyableError, match="Opaque"):
        request_digest(Agent(TestModel(), toolsets=[Opaque()]), "q", [], {})


def test_thinking_parts_from_different_providers_are_different_keys() -> None:
    from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, ThinkingPart, UserPromptPart

    agent = Agent(TestModel())

    def history(provider: str) -> list[Any]:
        return [
            ModelRequest(parts=[UserPromptPart("Hi")]),
            ModelResponse(parts=[ThinkingPart("hmm", signature="sig", provider_name=provider), TextPart("Hello")]),
        ]

    assert request_digest(agent, "q", history("anthropic"), {}) != request_digest(agent, "q", history("openai"), {})
    assert request_digest(agent, "q", history("anthropic"), {}) == request_digest(agent, "q", history("anthropic"), {})


def test_an_instrumented_model_is_keyed_as_the_model_it_wraps() -> None:
    from pydantic_ai.models.instrumented import InstrumentedModel

    plain = TestModel(custom_output_text="x")
    assert request_digest(Agent(plain), "q", [], {}) == request_digest(Agent(InstrumentedModel(plain)), "q", [], {})
    assert request_digest(Agent(plain), "q", [], {}) != request_digest(
        Agent(InstrumentedModel(TestModel(custom_output_text="y"))), "q", [], {}
    )


# ----------------------------------------------------------------- the encoding itself


class _Color(enum.Enum):
    RED = "red"


@dataclass
class _Point:
    x: int
    y: list[int]
    z: str | None = None


class _Tags(BaseModel):
    names: set[str]
    weights: dict[str, float]


def test_the_canonical_encoding_of_data_is_pinned() -> None:
    """Keys are recorded in fixture files and stores: the bytes key material encodes to must not change without a
    key-version bump (a faster encoder that changed one byte would make every recording miss)."""
    value = {
        "text": 'naïve ☃ \u2028 \x01 "q"', "n": 3, "f": 1.5e16, "small": 1e-07, "nan": float("nan"),
        "inf": float("inf"), "none": None, "flag": True, "list": [3, 1, 2], "tuple": (1, "a"), "set": {"b", "a", "c"},
        "frozen": frozenset({2, 1}), "dt": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        "date": datetime(2024, 1, 2).date(), "td": timedelta(seconds=90), "dec": decimal.Decimal("1.10"),
        "uuid": uuid.UUID(int=42), "path": pathlib.PurePosixPath("/tmp/x"), "enum": _Color.RED, "point": _Point(1, [2, 3]),
        "model": _Tags(names={"y", "x"}, weights={"b": 2.0, "a": 1.0}), "bytes": b"\x00\x01", 1: "int key",
    }
    expected = (
        '{"__mapping__":[["bytes",{"__sha256__":"b413f47d13ee2fe6c845b2ee141af81de858df4ec549a58b7970bb96645bc8d2"}],'
        '["date","2024-01-02"],["dec",{"__decimal__":"1.10"}],["dt","2024-01-02T03:04:05+00:00"],["enum","red"],'
        '["f",1.5e+16],["flag",true],["frozen",{"__set__":[1,2]}],["inf",Infinity],["list",[3,1,2]],'
        '["model",{"__type__":"MODULE._Tags","data":{"names":["x","y"],"weights":{"a":1.0,"b":2.0}}}],["n",3],'
        '["nan",NaN],["none",null],["path",{"__pureposixpath__":"/tmp/x"}],'
        '["point",{"__type__":"MODULE._Point","x":1,"y":[2,3]}],["set",{"__set__":["a","b","c"]}],["small",1e-07],'
        '["td",{"__timedelta__":90.0}],["text","naïve ☃ \u2028 \\u0001 \\"q\\""],["tuple",{"__tuple__":[1,"a"]}],'
        '["uuid",{"__uuid__":"00000000-0000-0000-0000-00000000002a"}],[1,"int key"]]}'
    ).replace("MODULE", __name__)
    assert canonical_json(_tagged(value)).decode() == expected
