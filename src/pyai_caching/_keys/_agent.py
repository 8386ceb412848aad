"""What an agent run is keyed by: the agent's configuration, the call's arguments, the prompt and history."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic_ai import messages as _messages
from pydantic_ai.agent import AbstractAgent, Agent
from pydantic_ai.models import Model

from ._canonical import UnkeyableError, canonical_json, qualname
from ._models import key_settings

__all__ = (
    "KEY_VERSION",
    "RUN_KWARGS_NOT_IN_KEY",
    "effective_model_name",
    "request_material",
    "digest_of",
    "request_digest",
    "format_key",
)

KEY_VERSION = "v2"
"""Bumped whenever the same inputs would hash differently; old entries then simply miss."""

RUN_KWARGS_NOT_IN_KEY = frozenset(
    {
        "deps",  # not hashable in general; see `key_extra`
        "usage_limits",
        "usage",
        "infer_name",
        "event_stream_handler",
        "run_id",
        "conversation_id",
        "conversation",  # its messages are keyed as history, in request_digest
        "metadata",
        "cancellation_token",
        "timeout",
        "retries",
        "workspace",
    }
)
"""`agent.run` keyword arguments that do not change the answer (or cannot be hashed)."""


def _effective_model(agent: AbstractAgent[Any, Any], run_model: Any) -> Any:
    """The model a run would use, in PydanticAI's order (`Agent._pick_raw_model`):
    `agent.override(model=...)` wins over the run's `model=`, which wins over the agent's."""
    override = agent._override_model.get() if isinstance(agent, Agent) else None  # pyright: ignore[reportPrivateUsage]
    if override is not None:
        return override.value
    return run_model if run_model is not None else agent.model


def effective_model_name(agent: AbstractAgent[Any, Any], run_model: Model | str | None) -> str | None:
    """`provider:name` of the model a run would use: an override, else the run's `model=`, else the agent's."""
    model = _effective_model(agent, run_model)
    if model is None:
        return None
    return model.model_id if isinstance(model, Model) else str(model)


def _merged_settings(agent: Agent[Any, Any], run_model: Any, run_settings: Any) -> Any:
    """Model, agent, capability and run settings merged in PydanticAI's order; callables kept by name."""
    model = _effective_model(agent, run_model)
    # `agent.override(model_settings=...)` replaces the agent's settings and makes the run's ignored.
    override = agent._override_model_settings.get()  # pyright: ignore[reportPrivateUsage]
    layers: list[Any] = [
        model.settings if isinstance(model, Model) else None,
        override.value if override is not None else agent.model_settings,
        agent._cap_model_settings,  # pyright: ignore[reportPrivateUsage]
        run_settings if override is None else None,
    ]
    merged: dict[str, Any] = {}
    dynamic: list[Any] = []
    for layer in layers:
        if layer is None:
            continue
        if type(layer) is dict:
            merged.update(layer)
        elif callable(layer):
            dynamic.append(layer)
        elif isinstance(layer, Mapping):
            merged.update(layer)
        else:
            raise UnkeyableError(f"model settings of type {type(layer).__qualname__} are not a mapping")
    return {"static": key_settings(merged), "dynamic": dynamic}


def _output_data(agent: Agent[Any, Any], run_output_type: Any) -> Any:
    if run_output_type is None:
        schema = agent._output_schema  # pyright: ignore[reportPrivateUsage]
    else:
        schema = _output_schema_for(run_output_type)
    return {
        "schema": _schema_json(schema),
        "validators": [v.function for v in agent._output_validators],  # pyright: ignore[reportPrivateUsage]
    }


_schema_jsons: dict[int, tuple[Any, bytes]] = {}


def _schema_json(schema: Any) -> bytes:
    """An output schema's key material, encoded once per schema object (schemas are built once and not
    changed; a large JSON schema would otherwise be encoded on every lookup)."""
    cached = _schema_jsons.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    processors = schema.toolset.processors if schema.toolset is not None else {}
    encoded = canonical_json(
        {
            "mode": schema.mode,
            "text": schema.allows_text,
            "none": schema.allows_none,
            "image": schema.allows_image,
            "deferred": schema.allows_deferred_tools,
            "object": schema.object_def,
            "template": getattr(schema, "template", None),
            "text_processor": _text_processor_data(schema.text_processor),
            "tools": {name: p.object_def for name, p in processors.items()},
        }
    )
    if len(_schema_jsons) >= 1024:
        _schema_jsons.clear()
    _schema_jsons[id(schema)] = (schema, encoded)
    return encoded


def _text_processor_data(processor: Any) -> Any:
    if processor is None:
        return None
    function_schema = getattr(processor, "_function_schema", None)
    return {
        "type": qualname(type(processor)),
        "function": function_schema.function if function_schema is not None else None,
    }


def _output_schema_for(output_type: Any) -> Any:
    spec = ("__list__", *output_type) if isinstance(output_type, list) else output_type  # `[A, B]`, hashable
    try:
        return _cached_output_schema(spec)
    except TypeError:  # an unhashable spec is built each time
        return _build_output_schema(spec)


def _build_output_schema(spec: Any) -> Any:
    from pydantic_ai._output import OutputSchema  # noqa: PLC0415 - private, imported where used

    if isinstance(spec, tuple) and spec[:1] == ("__list__",):
        spec = list(spec[1:])
    return OutputSchema.build(spec)


_cached_output_schema = functools.lru_cache(maxsize=256)(_build_output_schema)


def _agent_data(agent: Agent[Any, Any], run_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Everything about the agent (and the run's agent-shaping kwargs) that changes the answer."""
    if agent._override_root_capability.get() is not None:  # pyright: ignore[reportPrivateUsage]
        # `override(spec=...)` swaps every capability contribution (instructions, settings, tools).
        raise UnkeyableError("agent.override(spec=...) replacing the agent's capabilities is not keyed")
    run_model = run_kwargs.get("model")
    # `agent.override(instructions=...)` / `(native_tools=...)` replace the agent's own and its capabilities'.
    override_instructions = agent._override_instructions.get()  # pyright: ignore[reportPrivateUsage]
    override_native_tools = agent._override_native_tools.get()  # pyright: ignore[reportPrivateUsage]
    return {
        "model": _effective_model(agent, run_model),  # a Model by its identity (`_model_data`), or its name
        "settings": _merged_settings(agent, run_model, run_kwargs.get("model_settings")),
        "system_prompts": [
            *agent._system_prompts,  # pyright: ignore[reportPrivateUsage]
            *(r.function for r in agent._system_prompt_functions),  # pyright: ignore[reportPrivateUsage]
        ],
        "instructions": list(override_instructions.value)
        if override_instructions is not None
        else [
            i.instruction
            for i in (*agent._instructions, *agent._cap_instructions)  # pyright: ignore[reportPrivateUsage]
        ],
        # without an override, native tools come from the capabilities, keyed below
        "native_tools": list(override_native_tools.value) if override_native_tools is not None else None,
        "toolsets": list(agent.toolsets),
        # capabilities act through hooks too (history processors, model selection, thinking, ...)
        "capabilities": agent._effective_root_capability(),  # pyright: ignore[reportPrivateUsage]
        "output": _output_data(agent, run_kwargs.get("output_type")),
        "end_strategy": agent.end_strategy,
        # outputs (and tool arguments) are validated with it: another context can give another output
        "validation_context": getattr(agent, "_validation_context", None),
        # an argument passed as None is the argument left out
        "run": {
            k: v
            for k, v in run_kwargs.items()
            if v is not None and k not in RUN_KWARGS_NOT_IN_KEY and k not in _AGENT_SHAPING
        },
    }


_AGENT_SHAPING = frozenset({"model", "model_settings", "output_type"})


def request_material(
    agent: AbstractAgent[Any, Any],
    prompt: Any,
    history: Sequence[_messages.ModelMessage],
    run_kwargs: Mapping[str, Any],
    key_extra: Any = None,
) -> dict[str, Any]:
    """Everything that changes the answer to this run, as objects `canonical_json` can encode (`digest_of` hashes
    it; `request_manifest` summarizes it for explaining a miss).

    Raises:
        UnkeyableError: part of the agent or run cannot be turned into stable key material.
    """
    if not isinstance(agent, Agent):
        raise UnkeyableError(f"cannot read the configuration of a {type(agent).__qualname__}; only Agent is keyed")
    try:
        agent_data = _agent_data(agent, run_kwargs)
    except AttributeError as exc:  # a PydanticAI outside the tested range moved something
        raise UnkeyableError(f"this pydantic-ai version is not supported for keying: {exc}") from exc
    material = {
        "agent": agent_data,
        "prompt": prompt,
        "history": list(history),
        "extra": _tagged(key_extra),
    }
    conversation = run_kwargs.get("conversation")
    if conversation is not None:
        # `conversation=` stands in for `message_history=`: key its messages as the history, so the same
        # messages hit either way, plus the deferred tool calls it carries.
        try:
            material["history"] = [*material["history"], *conversation.messages]
            if conversation.deferred_tool_requests is not None:
                material["deferred_tool_requests"] = conversation.deferred_tool_requests
        except AttributeError as exc:
            raise UnkeyableError(f"cannot read the messages of conversation={type(conversation).__qualname__}") from exc
    return material


def digest_of(material: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of `request_material`.

    Raises:
        UnkeyableError: part of it has no stable data form.
    """
    return hashlib.sha256(canonical_json(material)).hexdigest()


def request_digest(
    agent: AbstractAgent[Any, Any],
    prompt: Any,
    history: Sequence[_messages.ModelMessage],
    run_kwargs: Mapping[str, Any],
    key_extra: Any = None,
) -> str:
    """SHA-256 hex digest of everything that changes the answer to this run.

    Raises:
        UnkeyableError: part of the agent or run cannot be turned into stable key material.
    """
    return digest_of(request_material(agent, prompt, history, run_kwargs, key_extra))


def _tagged(value: Any) -> Any:
    """`key_extra` with what JSON would merge kept apart: `{1: x}` is not `{"1": x}`, `(1,)` is not `[1]`."""
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: _tagged(v) for k, v in value.items()}
        items = [[_tagged(k), _tagged(v)] for k, v in value.items()]
        return {"__mapping__": sorted(items, key=lambda kv: canonical_json(kv[0]))}
    if isinstance(value, tuple):
        return {"__tuple__": [_tagged(v) for v in value]}
    if isinstance(value, list):
        return [_tagged(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"__set__": sorted((_tagged(v) for v in value), key=canonical_json)}
    return value


def format_key(namespace: str, task_name: str, digest: str) -> str:
    """`<namespace>:<key-version>:<task_name>:<digest>`, readable and groupable in `redis-cli`."""
    return f"{namespace}:{KEY_VERSION}:{task_name}:{digest}"
